# Subprocesses: asyncio's own _UnixSubprocessTransport (its pipes through
# our pipe transports), with two changes:
#
# - The child is started (subprocess.Popen: fork or vfork, exec, and the
#   wait for the exec to succeed, about 4 ms here) in a thread of its own,
#   so the loop goes on running meanwhile; the stock loop blocks for it.
#   The transport is then built around the started child, as asyncio builds
#   it around the Popen it makes itself.
# - The child's exit is observed through a pidfd: a ring poll on it
#   completes when the child exits, and the loop reaps it then (waitpid(),
#   as asyncio's PidfdChildWatcher).  No SIGCHLD handler, no watcher
#   thread, no child watcher to install (the stock loop's default watcher
#   on 3.12+ does the same through epoll).  A kernel without pidfd_open()
#   (before 5.3) gets a thread that waits for the child, as asyncio's
#   ThreadedChildWatcher.

cdef object _UnixSubprocessTransport = _unix_events._UnixSubprocessTransport
cdef object _waitstatus_to_exitcode = _unix_events.waitstatus_to_exitcode
cdef object _shield = asyncio.shield
cdef object _CancelledError = asyncio.CancelledError


class _SubprocessTransport(_UnixSubprocessTransport):
    """asyncio's subprocess transport around a child already started."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, *, started_child, **kwargs):
        self._proc = started_child


async def _loop_make_subprocess_transport(self, protocol, args, shell,
                                          stdin, stdout, stderr, bufsize,
                                          extra=None, **kwargs):
    started = self.create_future()
    threading.Thread(
        target=_start_child, name='aioring-spawn', daemon=True,
        args=(self, started, args, shell, stdin, stdout, stderr, bufsize, kwargs),
    ).start()
    cancelled = None
    while True:
        try:
            # (shielded: a cancellation must not lose the child)
            proc = await _shield(started)
            break
        except _CancelledError as exc:
            cancelled = exc         # the child is dealt with as asyncio would, below
    waiter = self.create_future()
    transp = _SubprocessTransport(self, protocol, args, shell,
                                  stdin, stdout, stderr, bufsize,
                                  waiter=waiter, extra=extra,
                                  started_child=proc)
    _watch_child(self, transp.get_pid(), transp)
    try:
        if cancelled is not None:
            raise cancelled
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()
        await transp._wait()
        raise
    return transp


def _start_child(loop, started, args, shell, stdin, stdout, stderr, bufsize, kwargs):
    # in the spawning thread: asyncio's Popen call, its outcome to the loop
    try:
        proc = subprocess.Popen(
            args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=False, bufsize=bufsize, **kwargs)
    except BaseException as exc:
        outcome = (None, exc)
    else:
        outcome = (proc, None)
    try:
        loop.call_soon_threadsafe(_child_started, started, outcome)
    except RuntimeError:
        # the loop closed meanwhile: nobody will use the child
        if outcome[0] is not None:
            _abandon_child(outcome[0])


def _child_started(started, outcome):
    proc, exc = outcome
    if exc is not None:
        started.set_exception(exc)
    else:
        started.set_result(proc)


def _abandon_child(proc):
    proc.kill()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    proc.wait()


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
