# Subprocesses: asyncio's own _UnixSubprocessTransport (subprocess.Popen,
# its pipes through our pipe transports), with the child's exit observed
# through a pidfd: a ring poll on it completes when the child exits, and
# the loop reaps it then (waitpid(), as asyncio's PidfdChildWatcher).  No SIGCHLD handler, no watcher thread, no child
# watcher to install (the stock loop's default watcher on 3.12+ does the
# same through epoll).  A kernel without pidfd_open() (before 5.3) gets a
# thread that waits for the child, as asyncio's ThreadedChildWatcher.

cdef object _UnixSubprocessTransport = _unix_events._UnixSubprocessTransport
cdef object _waitstatus_to_exitcode = _unix_events.waitstatus_to_exitcode


async def _loop_make_subprocess_transport(self, protocol, args, shell,
                                          stdin, stdout, stderr, bufsize,
                                          extra=None, **kwargs):
    waiter = self.create_future()
    transp = _UnixSubprocessTransport(self, protocol, args, shell,
                                      stdin, stdout, stderr, bufsize,
                                      waiter=waiter, extra=extra, **kwargs)
    _watch_child(self, transp.get_pid(), transp)
    try:
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()
        await transp._wait()
        raise
    return transp


cdef _watch_child(loop, int pid, transp):
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:     # (ENOSYS: a kernel before 5.3)
        threading.Thread(target=_wait_in_thread, args=(loop, pid, transp),
                         name=f'aioring-waitpid-{pid}', daemon=True).start()
        return
    loop._add_reader(pidfd, _child_exited, loop, pid, pidfd, transp)


def _child_exited(loop, int pid, int pidfd, transp):
    # the pidfd is readable: the child has exited
    loop._remove_reader(pidfd)
    os.close(pidfd)
    loop.call_soon(transp._process_exited, _reap(pid))


def _wait_in_thread(loop, int pid, transp):
    returncode = _reap(pid)
    try:
        loop.call_soon_threadsafe(transp._process_exited, returncode)
    except RuntimeError:
        pass        # the loop is closed


cdef int _reap(int pid):
    # the child has exited (or is about to): waitpid() returns at once
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # reaped elsewhere (os.waitpid() of the program's own): as asyncio
        _logger.warning("child process pid %d exit status already read: "
                        " will report returncode 255", pid)
        return 255
    return _waitstatus_to_exitcode(status)
