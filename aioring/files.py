"""Asynchronous files: aioring.open() and path helpers, an API that follows
aiofiles' (``aiofiles.open`` -> ``aioring.open``, ``aiofiles.os.stat`` ->
``aioring.files.stat``) with the behaviour of the built-in open().

On an aioring loop each read, write, open, close, fsync, truncate, stat,
unlink, rename and mkdir is one io_uring request on the loop's ring
(files.pxi); an operation the running kernel's ring does not take (probed
with IORING_REGISTER_PROBE) runs in the loop's executor instead.  On any
other asyncio loop every operation runs in the loop's executor
(loop.run_in_executor), as aiofiles does.  seek() and tell() are lseek(2)
calls on either loop: they never wait for a disk.

Layers, as in the io module: a binary file (unbuffered with buffering=0,
else with a read-ahead and a write buffer, as io.BufferedReader/Writer/
Random), and over it a text file that decodes with the codec's incremental
decoder and io.IncrementalNewlineDecoder, the pieces io.TextIOWrapper is
made of, so that what it reads and writes, and its tell() cookies, are those
of the built-in open() on the same file (docs/files.md).
"""
import asyncio
import codecs
import errno as _errno
import io
import locale
import operator
import os
import stat as _stat
import sys
import warnings

from aioring.loop import Loop as _Loop, FileFuture as _FileFuture

__all__ = (
    "open", "stat", "lstat", "unlink", "remove", "rmdir", "rename", "replace",
    "mkdir", "path", "access", "getcwd", "listdir", "scandir", "makedirs",
    "removedirs", "renames", "readlink", "symlink", "link", "sendfile", "statvfs",
    "AsyncBinaryFile", "AsyncTextFile", "uses_ring",
)

_AT_FDCWD = -100
_CLOSED_FILE = "I/O operation on closed file"

# Operations (names as loop._file_ops() gives them) that go to the executor
# even where the ring takes them: tests of the fallback path.
_OPS_OFF = frozenset(filter(None, os.environ.get("AIORING_FILE_OPS_OFF", "").split(",")))


# -- the requests: ring or executor ----------------------------------------------

class _ThreadOps:
    """Each request as the os function, called in the loop's executor."""

    ring = False

    def __init__(self, loop, executor):
        self.loop = loop
        self.executor = executor

    def _call(self, fn, *args):
        return self.loop.run_in_executor(self.executor, fn, *args)

    def openat(self, path, flags, mode, dir_fd):
        if dir_fd is None:
            return self._call(os.open, path, flags, mode)
        return self._call(lambda: os.open(path, flags, mode, dir_fd=dir_fd))

    def read(self, fd, size):
        return self._call(os.read, fd, size)

    def write(self, fd, data):
        return self._call(os.write, fd, data)

    def close(self, fd):
        return self._call(os.close, fd)

    def fsync(self, fd, datasync):
        return self._call(os.fdatasync if datasync else os.fsync, fd)

    def ftruncate(self, fd, length):
        return self._call(os.ftruncate, fd, length)

    def stat(self, path, dir_fd, follow_symlinks):
        return self._call(lambda: os.stat(path, dir_fd=dir_fd,
                                          follow_symlinks=follow_symlinks))

    def unlink(self, path, dir_fd, rmdir):
        fn = os.rmdir if rmdir else os.unlink
        return self._call(lambda: fn(path, dir_fd=dir_fd))

    def rename(self, src, dst, src_dir_fd, dst_dir_fd):
        return self._call(lambda: os.rename(src, dst, src_dir_fd=src_dir_fd,
                                            dst_dir_fd=dst_dir_fd))

    def mkdir(self, path, mode, dir_fd):
        return self._call(lambda: os.mkdir(path, mode, dir_fd=dir_fd))


def _path_bytes(path, refuse):
    # What the kernel takes.  A NUL in it gets the ValueError that `refuse`,
    # the os function that would take the path, raises for it (its message
    # names the function from 3.13 on): os checks it while converting its
    # arguments, before any system call.
    raw = os.fsencode(path)
    if b"\0" in raw:
        refuse(path)
        raise ValueError("embedded null byte")     # (not reached)
    return raw


def _refuse_open(path):
    os.open(path, os.O_RDONLY)


def _refuse_rename_src(path):
    os.rename(path, "-")


def _refuse_rename_dst(path):
    os.rename("-", path)


def _dirfd(dir_fd):
    return _AT_FDCWD if dir_fd is None else operator.index(dir_fd)


class _RingOps(_ThreadOps):
    """The requests on an aioring loop's ring; those its kernel lacks (or
    AIORING_FILE_OPS_OFF names) in the executor."""

    ring = True

    def __init__(self, loop, executor):
        super().__init__(loop, executor)
        self.on_ring = {name for name, ok in loop._file_ops().items()
                        if ok and name not in _OPS_OFF}
        for name in ("openat", "read", "write", "close", "fsync", "ftruncate"):
            if name in self.on_ring:
                setattr(self, name, getattr(self, "_ring_" + name))
        for name, ring_name in (("stat", "statx"), ("unlink", "unlinkat"),
                                ("rename", "renameat"), ("mkdir", "mkdirat")):
            if ring_name in self.on_ring:
                setattr(self, name, getattr(self, "_ring_" + name))

    def _ring_openat(self, path, flags, mode, dir_fd):
        return self.loop._file_openat(_dirfd(dir_fd), _path_bytes(path, _refuse_open), flags, mode, path)

    def _ring_read(self, fd, size):
        return self.loop._file_read(fd, size)

    def _ring_write(self, fd, data):
        return self.loop._file_write(fd, data)

    def _ring_close(self, fd):
        return self.loop._file_close(fd)

    def _ring_fsync(self, fd, datasync):
        return self.loop._file_fsync(fd, datasync)

    def _ring_ftruncate(self, fd, length):
        if length < 0:      # as os.ftruncate: the kernel's EINVAL
            return self._call(os.ftruncate, fd, length)
        return self.loop._file_ftruncate(fd, length)

    def _ring_stat(self, path, dir_fd, follow_symlinks):
        if isinstance(path, int):
            if dir_fd is not None:
                return self._call(lambda: os.stat(path, dir_fd=dir_fd))   # its ValueError
            return self.loop._file_statx(path, b"", True, path)
        return self.loop._file_statx(_dirfd(dir_fd), _path_bytes(path, os.stat),
                                     follow_symlinks, path)

    def _ring_unlink(self, path, dir_fd, rmdir):
        return self.loop._file_unlinkat(_dirfd(dir_fd),
                                        _path_bytes(path, os.rmdir if rmdir else os.unlink),
                                        rmdir, path)

    def _ring_rename(self, src, dst, src_dir_fd, dst_dir_fd):
        return self.loop._file_renameat(_dirfd(src_dir_fd), _path_bytes(src, _refuse_rename_src),
                                        _dirfd(dst_dir_fd), _path_bytes(dst, _refuse_rename_dst),
                                        src, dst)

    def _ring_mkdir(self, path, mode, dir_fd):
        return self.loop._file_mkdirat(_dirfd(dir_fd), _path_bytes(path, os.mkdir), mode, path)


def _ops(loop=None, executor=None):
    if loop is None:
        loop = asyncio.get_running_loop()
    if not isinstance(loop, _Loop):
        return _ThreadOps(loop, executor)
    if executor is not None:
        return _RingOps(loop, executor)
    ops = loop._file_requests
    if ops is None:
        ops = loop._file_requests = _RingOps(loop, None)
    return ops


def uses_ring(operation, loop=None):
    """Whether `operation` ('openat', 'read', 'write', 'close', 'fsync',
    'ftruncate', 'statx', 'unlinkat', 'renameat', 'mkdirat') runs on the
    ring of `loop` (default: the running loop); False on a loop that is not
    aioring's, where every operation runs in the executor."""
    ops = _ops(loop)
    return ops.ring and operation in ops.on_ring


async def _finish(fut, on_late=None, owner=None):
    # Wait for a request without abandoning it: a cancelled caller leaves it
    # to complete, and on_late takes its result (the bytes it read, the
    # descriptor it opened), so that nothing is lost or leaked.
    if type(fut) is _FileFuture:
        # A ring request's future ends with the request (the kernel is asked
        # to cancel it: a read from a pipe may never complete otherwise), so
        # a CancelledError here comes once it has completed.
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done():
                _late_result(fut, on_late)
            raise
    # A thread's call runs to its end: owner._late becomes a future done
    # once on_late has run, which the owner's next call waits for.
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if fut.done():
            _late_result(fut, on_late)
        else:
            settled = fut.get_loop().create_future()

            def late(f):
                try:
                    _late_result(f, on_late)
                finally:
                    settled.set_result(None)

            fut.add_done_callback(late)
            if owner is not None:
                owner._late = settled
        raise


def _late_result(fut, on_late):
    if on_late is not None and not fut.cancelled() and fut.exception() is None:
        on_late(fut.result())


# -- path helpers (aiofiles.os's names and signatures) ------------------------------

async def stat(path, *, dir_fd=None, follow_symlinks=True, loop=None, executor=None):
    """os.stat(): an os.stat_result (IORING_OP_STATX)."""
    if not isinstance(path, int):
        path = os.fspath(path)
    return await _ops(loop, executor).stat(path, dir_fd, follow_symlinks)


async def lstat(path, *, dir_fd=None, loop=None, executor=None):
    """os.lstat()."""
    return await stat(path, dir_fd=dir_fd, follow_symlinks=False, loop=loop,
                      executor=executor)


async def unlink(path, *, dir_fd=None, loop=None, executor=None):
    """os.unlink() (IORING_OP_UNLINKAT)."""
    return await _ops(loop, executor).unlink(os.fspath(path), dir_fd, False)


remove = unlink


async def rmdir(path, *, dir_fd=None, loop=None, executor=None):
    """os.rmdir() (IORING_OP_UNLINKAT with AT_REMOVEDIR)."""
    return await _ops(loop, executor).unlink(os.fspath(path), dir_fd, True)


async def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None, loop=None, executor=None):
    """os.rename() (IORING_OP_RENAMEAT)."""
    return await _ops(loop, executor).rename(os.fspath(src), os.fspath(dst),
                                             src_dir_fd, dst_dir_fd)


replace = rename    # the same call on POSIX


async def mkdir(path, mode=0o777, *, dir_fd=None, loop=None, executor=None):
    """os.mkdir() (IORING_OP_MKDIRAT)."""
    return await _ops(loop, executor).mkdir(os.fspath(path), mode, dir_fd)


# The rest of aiofiles.os and aiofiles.os.path, so that code using them
# switches over whole: what has no ring request runs in the executor (on
# every loop); the os.path tests built on stat() use the ring's STATX.

def _in_executor(fn):
    async def call(*args, loop=None, executor=None, **kwargs):
        if loop is None:
            loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: fn(*args, **kwargs))
    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = f"os.{fn.__name__}(), in the loop's executor."
    return call


access = _in_executor(os.access)
getcwd = _in_executor(os.getcwd)
listdir = _in_executor(os.listdir)
scandir = _in_executor(os.scandir)
makedirs = _in_executor(os.makedirs)
removedirs = _in_executor(os.removedirs)
renames = _in_executor(os.renames)
readlink = _in_executor(os.readlink)
symlink = _in_executor(os.symlink)
link = _in_executor(os.link)
sendfile = _in_executor(os.sendfile)
statvfs = _in_executor(os.statvfs)


async def _stat_or_none(path, follow_symlinks=True, loop=None, executor=None):
    # os.path's tests: False, not an error, for a path stat() refuses
    try:
        return await stat(path, follow_symlinks=follow_symlinks, loop=loop,
                          executor=executor)
    except (OSError, ValueError):
        return None


async def _exists(path, *, loop=None, executor=None):
    """os.path.exists()."""
    return await _stat_or_none(path, loop=loop, executor=executor) is not None


async def _isfile(path, *, loop=None, executor=None):
    """os.path.isfile()."""
    st = await _stat_or_none(path, loop=loop, executor=executor)
    return st is not None and _stat.S_ISREG(st.st_mode)


async def _isdir(path, *, loop=None, executor=None):
    """os.path.isdir()."""
    st = await _stat_or_none(path, loop=loop, executor=executor)
    return st is not None and _stat.S_ISDIR(st.st_mode)


async def _islink(path, *, loop=None, executor=None):
    """os.path.islink()."""
    st = await _stat_or_none(path, False, loop=loop, executor=executor)
    return st is not None and _stat.S_ISLNK(st.st_mode)


def _stat_field(field, doc):
    async def get(path, *, loop=None, executor=None):
        return getattr(await stat(path, loop=loop, executor=executor), field)
    get.__doc__ = doc
    return get


class _PathFunctions:
    """aiofiles.os.path's functions: aioring.files.path.exists(p), ..."""

    exists = staticmethod(_exists)
    isfile = staticmethod(_isfile)
    isdir = staticmethod(_isdir)
    islink = staticmethod(_islink)
    getsize = staticmethod(_stat_field("st_size", "os.path.getsize()."))
    getmtime = staticmethod(_stat_field("st_mtime", "os.path.getmtime()."))
    getatime = staticmethod(_stat_field("st_atime", "os.path.getatime()."))
    getctime = staticmethod(_stat_field("st_ctime", "os.path.getctime()."))
    abspath = staticmethod(_in_executor(os.path.abspath))
    ismount = staticmethod(_in_executor(os.path.ismount))
    samefile = staticmethod(_in_executor(os.path.samefile))
    sameopenfile = staticmethod(_in_executor(os.path.sameopenfile))


path = _PathFunctions()


# -- open() -------------------------------------------------------------------------

def open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
         closefd=True, opener=None, *, loop=None, executor=None):
    """The built-in open(), asynchronous: ``f = await aioring.open(...)`` or
    ``async with aioring.open(...) as f``.  Returns an AsyncBinaryFile
    (binary modes) or an AsyncTextFile (text modes).  `loop` defaults to the
    running loop; `executor` runs what does not go to the ring
    (loop.run_in_executor's default executor when None)."""
    return _OpenContext(_open(file, mode, buffering, encoding, errors, newline,
                              closefd, opener, loop, executor))


class _OpenContext:
    # awaitable, and an async context manager that closes the file
    __slots__ = ("_coro", "_file")

    def __init__(self, coro):
        self._coro = coro
        self._file = None

    def __await__(self):
        return self._coro.__await__()

    async def __aenter__(self):
        self._file = await self._coro
        return self._file

    async def __aexit__(self, exc_type, exc, tb):
        await self._file.close()
        self._file = None


# (mode, buffering, encoding, errors, newline) the built-in open() took:
# its checks, which raise an exception to say yes, are made once for each
# (a few hundred at most: a program does not use more)
_ACCEPTED_ARGUMENTS = set()


def _check_arguments(file, mode, buffering, encoding, errors, newline, closefd):
    # The built-in open()'s own checks, in its order, with its messages:
    # given a descriptor of -1 it makes all of them before it would open
    # anything, then fails on the descriptor.
    if not isinstance(file, int):
        os.fspath(file)     # its TypeError
    key = (mode, buffering, encoding, errors, newline)
    if key not in _ACCEPTED_ARGUMENTS:
        try:
            io.open(-1, mode, buffering, encoding, errors, newline, closefd=False)
        except ValueError as exc:
            if str(exc) != "negative file descriptor":
                raise
        else:       # (never: -1 is no file)
            raise AssertionError("io.open(-1) opened something")
        if len(_ACCEPTED_ARGUMENTS) < 256 and all(v is None or type(v) in (str, int)
                                                  for v in key):
            _ACCEPTED_ARGUMENTS.add(key)
    if isinstance(file, int):
        if file < 0:
            raise ValueError("negative file descriptor")
    elif not closefd:
        raise ValueError("Cannot use closefd=False with file name")
    # io.FileIO's own check, after those
    if sum(mode.count(c) for c in "xrwa") != 1:
        raise ValueError("Must have exactly one of create/read/write/append mode "
                         "and at most one plus")


def _text_encoding(encoding):
    if encoding is None or encoding == "locale":
        if sys.flags.utf8_mode:
            return "utf-8"
        getencoding = getattr(locale, "getencoding", None)
        return getencoding() if getencoding else locale.getpreferredencoding(False)
    return encoding


async def _open(file, mode, buffering, encoding, errors, newline, closefd, opener,
                loop, executor):
    _check_arguments(file, mode, buffering, encoding, errors, newline, closefd)
    if not isinstance(file, int):
        file = os.fspath(file)
        if b"\0" in os.fsencode(file):
            # (FileIO's own check and message: before the opener, and not
            # os.open()'s, whose message differs from 3.13 on)
            raise ValueError("embedded null byte")
    modes = set(mode)
    creating, reading, writing, appending = ("x" in modes, "r" in modes,
                                             "w" in modes, "a" in modes)
    updating, binary = "+" in modes, "b" in modes
    readable = reading or updating
    writable = writing or appending or creating or updating
    flags = ((os.O_RDWR if readable and writable else os.O_WRONLY if writable
              else os.O_RDONLY) | os.O_CLOEXEC)
    if creating:
        flags |= os.O_EXCL | os.O_CREAT
    elif writing:
        flags |= os.O_CREAT | os.O_TRUNC
    elif appending:
        flags |= os.O_APPEND | os.O_CREAT
    # FileIO's mode string
    if creating:
        raw_mode = "xb+" if readable else "xb"
    elif appending:
        raw_mode = "ab+" if readable else "ab"
    elif readable and writable:
        raw_mode = "rb+"
    else:
        raw_mode = "rb" if readable else "wb"

    ops = _ops(loop, executor)
    if isinstance(file, int):
        fd = file
    elif opener is not None:
        fd = opener(file, flags)
        if not isinstance(fd, int):
            raise TypeError(f"expected integer from opener")
        if fd < 0:
            raise ValueError(f"opener returned {fd}")
    else:
        fd = await _finish(ops.openat(file, flags, 0o666, None), os.close)
    try:
        if buffering == 0 and not binary:
            raise ValueError("can't have unbuffered text I/O")   # open() opened it first too
        st = os.fstat(fd)
        if _stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(_errno.EISDIR, os.strerror(_errno.EISDIR), file)
        if appending:
            os.lseek(fd, 0, os.SEEK_END)
        buffer_size = (io.DEFAULT_BUFFER_SIZE if st.st_blksize <= 1 else st.st_blksize)
        # (a regular file is no terminal: no ioctl to ask)
        line_buffering = buffering == 1 or (buffering < 0 and not _stat.S_ISREG(st.st_mode)
                                            and os.isatty(fd))
        if buffering in (1, -1):
            buffering = buffer_size
        f = AsyncBinaryFile(fd, file, raw_mode, closefd, ops, readable, writable,
                            buffering)
        if binary:
            return f
        return AsyncTextFile(f, mode, encoding, errors, newline, line_buffering)
    except BaseException:
        if closefd:
            os.close(fd)
        raise


# -- the binary file ------------------------------------------------------------------

_READ_AHEAD_MIN = 64 * 1024     # a buffered read asks the kernel for this much at least


class _AsyncFileBase:
    """What the binary and the text file share: lines by readline(), and
    `async with` closing the file."""

    async def readlines(self, hint=-1):
        hint = _size_argument(hint)
        lines = []
        total = 0
        async for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __aiter__(self):
        return self

    async def __anext__(self):
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.close()


class AsyncBinaryFile(_AsyncFileBase):
    """A file opened in a binary mode: io.FileIO's methods (buffering=0) or
    io.BufferedReader/Writer/Random's, asynchronous."""

    def __init__(self, fd, name, mode, closefd, ops, readable, writable, buffering):
        self.name = name
        self.mode = mode
        self._fd = fd
        self._closefd = closefd
        self._ops = ops
        self._readable = readable
        self._writable = writable
        self._buffered = buffering != 0
        self._buffer_size = buffering
        self._read_ahead = max(buffering, _READ_AHEAD_MIN)
        self._seekable = None
        self._closed = False
        self._rbuf = b""            # bytes read ahead of the position...
        self._rpos = 0              # ...from this index on
        self._wbuf = bytearray()    # written, not yet handed to the kernel
        self._lock = asyncio.Lock()
        self._late = None           # a request a cancelled call left running

    def __repr__(self):
        return f"<aioring.files.AsyncBinaryFile name={self.name!r} mode={self.mode!r}>"

    def __del__(self):
        if not getattr(self, "_closed", True) and self._closefd:
            warnings.warn(f"unclosed file {self!r}", ResourceWarning, source=self)
            self._closed = True
            try:
                os.close(self._fd)
            except OSError:
                pass

    # -- state ----------------------------------------------------------------

    @property
    def closed(self):
        return self._closed

    def fileno(self):
        self._check_closed()
        return self._fd

    def readable(self):
        if self._buffered and not self._readable:
            return False        # io.BufferedWriter's is IOBase's: closed or not
        self._check_closed()
        return self._readable

    async def writable(self):
        self._check_closed()
        return self._writable

    async def seekable(self):
        self._check_closed()
        return self._is_seekable()

    async def isatty(self):
        self._check_closed()
        return os.isatty(self._fd)

    def _is_seekable(self):
        if self._seekable is None:
            try:
                os.lseek(self._fd, 0, os.SEEK_CUR)
                self._seekable = True
            except OSError:
                self._seekable = False
        return self._seekable

    def _check_closed(self, what=None):
        if self._closed:
            if what is None or not self._buffered:
                raise ValueError(_CLOSED_FILE)
            if what == "write":
                raise ValueError("write to closed file")
            raise ValueError(f"{what} of closed file")

    def _check_readable(self, what, unsupported="read"):
        # what: the name in "... of closed file"; unsupported: the one a
        # write-only io.BufferedWriter's UnsupportedOperation gives
        if not self._buffered:
            self._check_closed()        # io.FileIO: closed first
        if not self._readable:
            if self._buffered:
                raise io.UnsupportedOperation(unsupported)
            raise io.UnsupportedOperation("File not open for reading")
        self._check_closed(what)

    def _check_writable(self, what):
        if not self._buffered:
            self._check_closed()
        if not self._writable:
            if self._buffered:
                raise io.UnsupportedOperation(what)
            raise io.UnsupportedOperation("File not open for writing")
        self._check_closed(what)

    async def _settle(self):
        # a request left running by a cancelled call completes first
        late, self._late = self._late, None
        if late is not None and not late.done():
            await asyncio.wait([late])

    # -- requests --------------------------------------------------------------

    def _keep_late_read(self, data):
        self._rbuf = self._rbuf[self._rpos:] + data
        self._rpos = 0

    async def _raw_read(self, size):
        return await _finish(self._ops.read(self._fd, size), self._keep_late_read, self)

    async def _raw_write(self, data):
        return await _finish(self._ops.write(self._fd, data), None, self)

    def _buffered_bytes(self):
        return len(self._rbuf) - self._rpos

    def _take(self, size):
        # up to size bytes of the read-ahead (size < 0: all)
        start = self._rpos
        end = len(self._rbuf) if size < 0 else min(len(self._rbuf), start + size)
        chunk = self._rbuf[start:end] if start or end != len(self._rbuf) else self._rbuf
        if end == len(self._rbuf):
            self._rbuf, self._rpos = b"", 0
        else:
            self._rpos = end
        return chunk

    def _untake(self, parts):
        # a cancelled read gives back what it took, ahead of what is left
        if parts:
            self._rbuf = b"".join(parts) + self._rbuf[self._rpos:]
            self._rpos = 0

    async def _rewind_read_ahead(self):
        # before a write or a seek: the kernel's position goes back to ours
        ahead = self._buffered_bytes()
        if ahead:
            os.lseek(self._fd, -ahead, os.SEEK_CUR)
        self._rbuf, self._rpos = b"", 0

    async def _flush_unlocked(self):
        while self._wbuf:
            data = bytes(self._wbuf)
            written = await _finish(self._ops.write(self._fd, data), self._drop_written, self)
            self._drop_written(written)

    def _drop_written(self, n):
        del self._wbuf[:n]

    # -- reading ---------------------------------------------------------------

    async def read(self, size=-1):
        size = _size_argument(size)
        self._check_readable("read")
        async with self._lock:
            await self._settle()
            return await self._read(size)

    async def _read(self, size):
        if self._wbuf:
            await self._flush_unlocked()
        if not self._buffered:
            if self._buffered_bytes():      # what a cancelled read got
                return self._take(size)
            if size < 0:
                return await self._readall()
            return await self._raw_read(size)
        if size < 0:
            head = self._take(-1)
            rest = await self._readall()
            return head + rest if head else rest
        parts = []
        wanted = size
        if self._buffered_bytes():
            chunk = self._take(wanted)
            parts.append(chunk)
            wanted -= len(chunk)
        try:
            while wanted > 0:
                data = await self._raw_read(max(wanted, self._read_ahead))
                if not data:
                    break
                if len(data) > wanted:
                    self._rbuf, self._rpos = data, wanted
                    data = data[:wanted]
                parts.append(data)
                wanted -= len(data)
        except asyncio.CancelledError:
            self._untake(parts)
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _readall(self):
        # everything to the end: sized by fstat where it can be, as FileIO.readall
        parts = []
        try:
            st = os.fstat(self._fd)
            pos = os.lseek(self._fd, 0, os.SEEK_CUR)
            guess = st.st_size - pos + 1 if st.st_size >= pos else 0
            # a regular file read up to its size has ended: no read for
            # the b"" that says so (one that grows meanwhile is read as it
            # was an instant earlier, which a second read could miss too)
            left = st.st_size - pos if _stat.S_ISREG(st.st_mode) else -1
        except OSError:
            guess = 0
            left = -1
        try:
            while True:
                data = await self._raw_read(max(guess, self._read_ahead))
                if not data:
                    break
                parts.append(data)
                guess = 0
                left -= len(data)
                if left == 0:
                    break
        except asyncio.CancelledError:
            self._untake(parts)
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def readall(self):
        self._check_readable("read")
        async with self._lock:
            await self._settle()
            return await self._read(-1)

    async def read1(self, size=-1):
        size = _size_argument(size)
        self._check_readable("read1", "read1")
        async with self._lock:
            await self._settle()
            return await self._read1(size)

    async def _read1(self, size):
        if size < 0:
            size = self._buffer_size
        if size == 0:
            return b""
        if self._wbuf:
            await self._flush_unlocked()
        if self._buffered_bytes():
            return self._take(size)
        data = await self._raw_read(max(size, self._read_ahead))
        if len(data) > size:
            self._rbuf, self._rpos = data, size
            data = data[:size]
        return data

    async def peek(self, size=0):
        self._check_readable("peek", "peek")
        async with self._lock:
            await self._settle()
            if self._wbuf:
                await self._flush_unlocked()
            if not self._buffered_bytes():
                self._rbuf, self._rpos = await self._raw_read(self._read_ahead), 0
            return self._rbuf[self._rpos:]

    async def readinto(self, b):
        self._check_readable("readinto")
        view = memoryview(b).cast("B")
        async with self._lock:
            await self._settle()
            data = await self._read(len(view)) if self._buffered else \
                await self._raw_read(len(view))
        view[:len(data)] = data
        return len(data)

    async def readline(self, size=-1):
        size = _size_argument(size)
        self._check_readable("readline")
        async with self._lock:
            await self._settle()
            return await self._readline(size)

    async def _readline(self, size):
        if self._wbuf:
            await self._flush_unlocked()
        parts = []
        got = 0
        try:
            while size < 0 or got < size:
                if not self._buffered_bytes():
                    if self._buffered:
                        want = self._read_ahead
                    elif self._is_seekable():
                        # a chunk, the excess given back below by a seek:
                        # where io.FileIO reads one byte at a time
                        want = io.DEFAULT_BUFFER_SIZE if size < 0 else min(
                            size - got, io.DEFAULT_BUFFER_SIZE)
                    else:
                        want = 1
                    self._rbuf, self._rpos = await self._raw_read(want), 0
                    if not self._rbuf:
                        break
                end = self._rbuf.find(b"\n", self._rpos)
                if end >= 0:
                    end += 1
                limit = len(self._rbuf) if end < 0 else end
                if size >= 0:
                    limit = min(limit, self._rpos + size - got)
                chunk = self._take(limit - self._rpos)
                parts.append(chunk)
                got += len(chunk)
                if end >= 0 and limit == end:
                    break
        except asyncio.CancelledError:
            self._untake(parts)
            raise
        if not self._buffered and self._buffered_bytes():
            await self._rewind_read_ahead()
        return b"".join(parts)

    # -- writing ---------------------------------------------------------------

    async def write(self, b):
        if isinstance(b, str) or not _is_buffer(b):
            raise TypeError(f"a bytes-like object is required, not '{type(b).__name__}'")
        self._check_writable("write")
        data = bytes(b)
        async with self._lock:
            await self._settle()
            return await self._write(data)

    async def _write(self, data):
        if self._buffered_bytes():
            await self._rewind_read_ahead()
        if not self._buffered:
            return await self._raw_write(data)
        if len(data) <= self._buffer_size - len(self._wbuf):
            self._wbuf += data
            return len(data)
        # As io.BufferedWriter: what is buffered goes first, then data is
        # written from where it is (no copy into the buffer: that copy, and
        # the page faults of a new megabyte each time, cost more than the
        # write) until what is left fits in the buffer.
        await self._flush_unlocked()
        done = [0, False]       # bytes of data written; the rest is in _wbuf

        def late(n):
            # a write a cancelled call left running: in a thread it ends
            # after the rest went into _wbuf, on the ring before
            if done[1]:
                self._drop_written(n)
            else:
                done[0] += n

        try:
            while len(data) - done[0] > self._buffer_size:
                chunk = data[done[0]:] if done[0] else data
                done[0] += await _finish(self._ops.write(self._fd, chunk), late, self)
        except asyncio.CancelledError:
            # nothing lost: the next flush writes the rest
            done[1] = True
            self._wbuf += data[done[0]:]
            raise
        # (an error leaves the rest out, as io.BufferedWriter does)
        self._wbuf += data[done[0]:] if done[0] else data
        return len(data)

    async def writelines(self, lines):
        for line in lines:
            await self.write(line)

    async def flush(self):
        if self._closed:
            if self._buffered and self._writable:
                raise ValueError("flush of closed file")
            raise ValueError(_CLOSED_FILE + ".")
        async with self._lock:
            await self._settle()
            await self._flush_unlocked()

    async def fsync(self, datasync=False):
        """flush(), then fsync(2) (fdatasync(2) with datasync=True)."""
        await self.flush()
        await self._ops.fsync(self._fd, datasync)

    # -- position --------------------------------------------------------------

    async def seek(self, offset, whence=os.SEEK_SET):
        offset = operator.index(offset)
        if self._buffered and whence not in (0, 1, 2, os.SEEK_DATA, os.SEEK_HOLE):
            raise ValueError(f"whence value {whence} unsupported")
        self._check_closed("seek")
        async with self._lock:
            await self._settle()
            return await self._seek(offset, whence)

    async def _seek(self, offset, whence):
        await self._flush_unlocked()
        if whence == os.SEEK_CUR:
            offset -= self._buffered_bytes()
        pos = os.lseek(self._fd, offset, whence)
        self._rbuf, self._rpos = b"", 0
        return pos

    async def tell(self):
        self._check_closed()
        async with self._lock:
            await self._settle()
            return self._tell()

    def _tell(self):
        return os.lseek(self._fd, 0, os.SEEK_CUR) - self._buffered_bytes() + len(self._wbuf)

    async def truncate(self, size=None):
        self._check_closed("truncate")
        self._check_writable("truncate")
        async with self._lock:
            await self._settle()
            return await self._truncate(size)

    async def _truncate(self, size):
        await self._flush_unlocked()
        if self._buffered_bytes():
            await self._rewind_read_ahead()
        if size is None:
            size = os.lseek(self._fd, 0, os.SEEK_CUR)
        else:
            size = operator.index(size)
        await self._ops.ftruncate(self._fd, size)
        return size

    # -- closing ---------------------------------------------------------------

    async def close(self):
        if self._closed:
            return
        try:
            if self._writable:
                async with self._lock:
                    await self._settle()
                    await self._flush_unlocked()
        finally:
            self._closed = True
            if self._closefd:
                await self._ops.close(self._fd)


def _size_argument(size):
    if size is None:
        return -1
    if not isinstance(size, int):
        try:
            return operator.index(size)
        except TypeError:
            raise TypeError(f"argument should be integer or None, not "
                            f"'{type(size).__name__}'") from None
    return size


def _is_buffer(b):
    try:
        memoryview(b)
    except TypeError:
        return False
    return True


# -- the text file ------------------------------------------------------------------

_TEXT_CHUNK = 8192      # bytes decoded at a time, as io.TextIOWrapper


# io.TextIOWrapper's tell() cookie, laid out as its C implementation packs
# it (a 64-bit position, then 32-bit decoder flags, bytes to feed and
# characters to skip, then the need-EOF byte), so that the numbers agree.
def _cookie(position, dec_flags=0, bytes_to_feed=0, need_eof=False, chars_to_skip=0):
    return (position | (dec_flags << 64) | (bytes_to_feed << 96)
            | (chars_to_skip << 128) | (bool(need_eof) << 160))


def _uncookie(cookie):
    rest, position = divmod(cookie, 1 << 64)
    rest, dec_flags = divmod(rest, 1 << 32)
    rest, bytes_to_feed = divmod(rest, 1 << 32)
    need_eof, chars_to_skip = divmod(rest, 1 << 32)
    return position, dec_flags, bytes_to_feed, need_eof, chars_to_skip


class AsyncTextFile(_AsyncFileBase):
    """A file opened in a text mode: io.TextIOWrapper's methods, asynchronous,
    over an AsyncBinaryFile (`buffer`)."""

    def __init__(self, buffer, mode, encoding, errors, newline, line_buffering):
        self.buffer = buffer
        self.mode = mode
        self._line_buffering = line_buffering
        self._closing = False
        try:
            self._setup(encoding, errors, newline)
        except BaseException:
            buffer._closed = True       # the caller closes the descriptor
            raise

    def _setup(self, encoding, errors, newline):
        encoding = _text_encoding(encoding)
        if not isinstance(encoding, str):
            raise TypeError(f"open() argument 'encoding' must be str or None, "
                            f"not {type(encoding).__name__}")
        info = codecs.lookup(encoding)
        if not info._is_text_encoding:
            raise LookupError(f"{encoding!r} is not a text encoding; use codecs.open() "
                              f"to handle arbitrary codecs")
        if errors is None:
            errors = "strict"
        if newline not in (None, "", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline}")
        self._encoding = encoding
        self._errors = errors
        self._newline = newline
        self._readuniversal = not newline
        self._readtranslate = newline is None
        self._readnl = newline
        self._writetranslate = newline != ""
        self._writenl = newline or os.linesep
        buffer = self.buffer
        self._decoder = None
        if buffer._readable:
            decoder = info.incrementaldecoder(errors)
            if self._readuniversal:
                decoder = io.IncrementalNewlineDecoder(decoder, self._readtranslate)
            self._decoder = decoder
        self._encoder = None
        if buffer._writable:
            self._encoder = info.incrementalencoder(errors)
            # a BOM goes only at the start of the file
            if buffer._is_seekable() and buffer._tell() != 0:
                self._encoder.setstate(0)
        self._decoded = ""          # the last chunk, decoded...
        self._used = 0              # ...of which this much was read
        self._snapshot = None       # (decoder flags, bytes) behind self._decoded
        self._untellable = False    # a cancelled read left text ahead of the snapshot
        self._b2cratio = 0.0        # bytes per character of the last chunk (tell())

    def __repr__(self):
        return (f"<aioring.files.AsyncTextFile name={self.name!r} mode={self.mode!r} "
                f"encoding={self._encoding!r}>")

    # -- state ----------------------------------------------------------------

    name = property(lambda self: self.buffer.name)
    closed = property(lambda self: self.buffer.closed)
    encoding = property(lambda self: self._encoding)
    errors = property(lambda self: self._errors)
    line_buffering = property(lambda self: self._line_buffering)

    @property
    def newlines(self):
        return getattr(self._decoder, "newlines", None)

    def fileno(self):
        return self.buffer.fileno()

    async def readable(self):
        return self.buffer.readable()

    async def writable(self):
        return await self.buffer.writable()

    async def seekable(self):
        return await self.buffer.seekable()

    async def isatty(self):
        return await self.buffer.isatty()

    def _check_closed(self):
        if self.buffer.closed:
            raise ValueError(_CLOSED_FILE + ".")

    def _check_readable(self):
        self._check_closed()
        if self._decoder is None:
            raise io.UnsupportedOperation("not readable")

    # -- reading ---------------------------------------------------------------

    def _take(self, size=-1):
        start = self._used
        end = len(self._decoded) if size < 0 else min(len(self._decoded), start + size)
        self._used = end
        return self._decoded[start:end]

    def _reset_decoded(self):
        self._decoded = ""
        self._used = 0
        self._snapshot = None

    async def _read_chunk(self):
        # decode the next chunk; False at the end of the file
        dec_buffer, dec_flags = self._decoder.getstate()
        chunk = await self.buffer._read1(_TEXT_CHUNK)
        eof = not chunk
        decoded = self._decoder.decode(chunk, eof)
        rest = self._decoded[self._used:]
        self._b2cratio = len(chunk) / len(decoded) if decoded else 0.0
        if rest:        # only after a cancelled read: no tell() from here
            decoded = rest + decoded
            self._untellable = True
        self._decoded, self._used = decoded, 0
        self._snapshot = (dec_flags, dec_buffer + chunk)
        return not eof

    def _give_back(self, parts):
        # a cancelled read keeps what it took for the next one
        if parts:
            self._decoded = "".join(parts) + self._decoded[self._used:]
            self._used = 0
            self._untellable = True

    async def read(self, size=-1):
        size = _size_argument(size)
        self._check_readable()
        async with self.buffer._lock:
            await self.buffer._settle()
            if size < 0:
                head = self._take()
                data = await self.buffer._read(-1)
                text = head + self._decoder.decode(data, True)
                self._reset_decoded()
                return text
            parts = [self._take(size)]
            got = len(parts[0])
            try:
                while got < size:
                    more = await self._read_chunk()
                    piece = self._take(size - got)
                    parts.append(piece)
                    got += len(piece)
                    if not more and not piece:
                        break
            except asyncio.CancelledError:
                self._give_back(parts)
                raise
            return "".join(parts)

    def _line_end(self, text, start):
        # the index just past the first line ending in text[start:], or -1
        if self._readtranslate:
            end = text.find("\n", start)
            return -1 if end < 0 else end + 1
        if self._readuniversal:
            # \r, \n or \r\n; the decoder holds back a final \r until it
            # knows what follows (or the file ends)
            lf = text.find("\n", start)
            cr = text.find("\r", start, lf if lf >= 0 else len(text))
            if cr >= 0:
                return cr + 2 if text.startswith("\n", cr + 1) else cr + 1
            return -1 if lf < 0 else lf + 1
        end = text.find(self._readnl, start)
        return -1 if end < 0 else end + len(self._readnl)

    async def readline(self, size=-1):
        size = operator.index(size) if size is not None else -1
        self._check_readable()
        async with self.buffer._lock:
            await self.buffer._settle()
            parts = []
            got = 0
            try:
                while True:
                    text, start = self._decoded, self._used
                    if (self._readnl == "\r\n" and parts and parts[-1].endswith("\r")
                            and text.startswith("\n", start)):
                        end = start + 1     # a \r\n split between two chunks
                    else:
                        end = self._line_end(text, start)
                    stop = len(text) if end < 0 else end
                    if size >= 0 and got + stop - start >= size:
                        end = stop = start + size - got
                    parts.append(text[start:stop])
                    got += stop - start
                    self._used = stop
                    if end >= 0:
                        break
                    if not await self._read_chunk() and self._used == len(self._decoded):
                        break
            except asyncio.CancelledError:
                self._give_back(parts)
                raise
            return "".join(parts)

    # -- writing ---------------------------------------------------------------

    async def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._check_closed()
        if self._encoder is None:
            raise io.UnsupportedOperation("not writable")
        length = len(s)
        haslf = (self._writetranslate or self._line_buffering) and "\n" in s
        if haslf and self._writetranslate and self._writenl != "\n":
            s = s.replace("\n", self._writenl)
        data = self._encoder.encode(s)
        async with self.buffer._lock:
            await self.buffer._settle()
            # as io.TextIOWrapper: text read ahead is dropped, and the bytes
            # go where the binary file's position is
            self._reset_decoded()
            if self._decoder is not None:
                self._decoder.reset()
            await self.buffer._write(data)
            if self._line_buffering and (haslf or "\r" in s):
                await self.buffer._flush_unlocked()
        return length

    async def writelines(self, lines):
        for line in lines:
            await self.write(line)

    async def flush(self):
        self._check_closed()
        await self.buffer.flush()

    async def fsync(self, datasync=False):
        """flush(), then fsync(2) (fdatasync(2) with datasync=True)."""
        await self.buffer.fsync(datasync)

    async def truncate(self, pos=None):
        self._check_closed()
        await self.flush()
        if pos is None:
            pos = await self.tell()
        return await self.buffer.truncate(pos)

    # -- position --------------------------------------------------------------

    async def tell(self):
        self._check_closed()
        if not self.buffer._is_seekable():
            raise io.UnsupportedOperation("underlying stream is not seekable")
        async with self.buffer._lock:
            await self.buffer._settle()
            await self.buffer._flush_unlocked()
            if self._untellable:
                raise OSError("can't reconstruct logical file position")
            position = self.buffer._tell()
            if self._decoder is None or self._snapshot is None:
                return position
            dec_flags, fed = self._snapshot
            position -= len(fed)
            skip = self._used
            if skip == 0:
                return _cookie(position, dec_flags)
            return self._cookie_within(position, dec_flags, fed, skip)

    def _cookie_within(self, position, dec_flags, fed, skip):
        # The cookie for `skip` characters into what the bytes `fed` decode
        # to from (position, dec_flags): a start point where the decoder
        # holds no bytes, and from there the bytes to feed and characters
        # to skip.  Of the several cookies that name the same place, the
        # one io.TextIOWrapper returns: its start point is found the same
        # way, first by a guess from the chunk's bytes-per-character ratio,
        # then one byte at a time.
        decoder = self._decoder
        saved = decoder.getstate()
        try:
            start, flags = 0, dec_flags
            guess = int(self._b2cratio * skip)
            step = 1
            while guess > 0:
                decoder.setstate((b"", dec_flags))
                n = len(decoder.decode(fed[:guess]))
                if n <= skip:
                    pending, new_flags = decoder.getstate()
                    if not pending:
                        start, flags = guess, new_flags
                        skip -= n
                        break
                    guess -= len(pending)
                    step = 1
                else:
                    guess -= step
                    step *= 2
            decoder.setstate((b"", flags))
            if skip == 0:
                return _cookie(position + start, flags)
            to_feed = 0
            chars = 0
            need_eof = False
            i = start
            while i < len(fed):
                chars += len(decoder.decode(fed[i:i + 1]))
                to_feed += 1
                pending, new_flags = decoder.getstate()
                if not pending and chars <= skip:
                    # a safe start point: move up to it
                    start += to_feed
                    skip -= chars
                    flags = new_flags
                    to_feed = chars = 0
                if chars >= skip:
                    break
                i += 1
            else:
                chars += len(decoder.decode(b"", True))
                need_eof = True
                if chars < skip:
                    raise OSError("can't reconstruct logical file position")
            return _cookie(position + start, flags, to_feed, need_eof, skip)
        finally:
            decoder.setstate(saved)

    async def seek(self, cookie, whence=os.SEEK_SET):
        self._check_closed()
        if not self.buffer._is_seekable():
            raise io.UnsupportedOperation("underlying stream is not seekable")
        if whence not in (0, 1, 2):
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if whence == os.SEEK_CUR:
            if cookie != 0:
                raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
            cookie = await self.tell()
        elif whence == os.SEEK_END:
            if cookie != 0:
                raise io.UnsupportedOperation("can't do nonzero end-relative seeks")
            async with self.buffer._lock:
                await self.buffer._settle()
                self._reset_decoded()
                self._untellable = False
                position = await self.buffer._seek(0, os.SEEK_END)
                if self._decoder is not None:
                    self._decoder.reset()
                self._reset_encoder(position)
                return position
        cookie = operator.index(cookie)
        if cookie < 0:
            raise ValueError(f"negative seek position {cookie}")
        position, dec_flags, bytes_to_feed, need_eof, chars_to_skip = _uncookie(cookie)
        async with self.buffer._lock:
            await self.buffer._settle()
            await self.buffer._seek(position, os.SEEK_SET)
            self._reset_decoded()
            self._untellable = False
            decoder = self._decoder
            if decoder is not None:
                if cookie == 0:
                    decoder.reset()
                else:
                    decoder.setstate((b"", dec_flags))
                self._snapshot = (dec_flags, b"")
            if chars_to_skip:
                fed = await self.buffer._read(bytes_to_feed)
                self._decoded = decoder.decode(fed, need_eof)
                self._snapshot = (dec_flags, fed)
                if len(self._decoded) < chars_to_skip:
                    raise OSError("can't restore logical file position")
                self._used = chars_to_skip
            self._reset_encoder(cookie)
        return cookie

    def _reset_encoder(self, position):
        if self._encoder is not None:
            if position == 0:
                self._encoder.reset()
            else:
                self._encoder.setstate(0)

    # -- closing ---------------------------------------------------------------

    async def close(self):
        if self.buffer.closed:
            return
        try:
            if self._encoder is not None:
                await self.buffer.flush()
        finally:
            await self.buffer.close()
