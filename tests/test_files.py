"""aioring.open() and aioring.files against the built-in open() and os.*.

Each async test runs on the stock loop (every operation in the executor)
and on aioring (the ring path; tests check that it is the one taken).  A
parity test makes the same calls on a built-in file object and on an
aioring file over equal copies of a file and compares every result and
every exception (type, message, errno, filename), then the files' bytes.
"""
import asyncio
import codecs
import gc
import inspect
import io
import os
import random
import stat
import threading
import warnings

import pytest

import aioring
import aioring.files as afiles
from _loop_helpers import is_aioring

MIB = 1024 * 1024


def outcome(call):
    try:
        return ("ok", call())
    except Exception as exc:
        return error_of(exc)


async def async_outcome(call):
    try:
        result = call()
        if inspect.isawaitable(result):
            result = await result
        return ("ok", result)
    except Exception as exc:
        return error_of(exc)


def error_of(exc):
    return ("error", type(exc), str(exc), getattr(exc, "errno", None),
            getattr(exc, "filename", None), getattr(exc, "filename2", None))


async def compare(sync_file, async_file, steps):
    """Make each (method, *args) call on both files; every outcome equal."""
    log = []
    for method, *args in steps:
        expected = outcome(lambda: getattr(sync_file, method)(*args))
        got = await async_outcome(lambda: getattr(async_file, method)(*args))
        log.append((method, args, expected))
        assert got == expected, f"after {_short(log[-12:])}"
    return log


def _short(value):
    import reprlib
    r = reprlib.Repr()
    r.maxstring = r.maxother = 40
    return r.repr(value)


@pytest.fixture
def twins(tmp_path):
    """Two paths holding the same bytes: twins(data) -> (path_a, path_b)."""
    def make(data=b"", name="f"):
        a, b = tmp_path / f"{name}.builtin", tmp_path / f"{name}.aioring"
        a.write_bytes(data)
        b.write_bytes(data)
        return str(a), str(b)
    return make


def random_bytes(rng, n):
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def binary_text(rng, n):
    # bytes with plenty of line endings
    pieces = []
    while sum(map(len, pieces)) < n:
        pieces.append(random_bytes(rng, rng.randrange(0, 40)))
        pieces.append(rng.choice([b"\n", b"\r\n", b"\r", b"\n\n"]))
    return b"".join(pieces)[:n]


def assert_ring_used(before):
    loop = asyncio.get_running_loop()
    if is_aioring(loop):
        assert loop.stats()["file_requests"] > before


def ring_requests():
    loop = asyncio.get_running_loop()
    return loop.stats()["file_requests"] if is_aioring(loop) else 0


# -- binary -------------------------------------------------------------------------

@pytest.mark.parametrize("buffering", [-1, 0, 5, 100])
@pytest.mark.parametrize("seed", range(4))
async def test_binary_read_parity(twins, seed, buffering):
    rng = random.Random(seed)
    data = binary_text(rng, rng.choice([0, 1, 1000, 70000, 200000]))
    a, b = twins(data)
    before = ring_requests()
    steps = []
    for _ in range(60):
        kind = rng.randrange(8)
        if kind == 0:
            steps.append(("read", rng.choice([-1, None, 0, 1, 7, 4096, 100000])))
        elif kind == 1:
            steps.append(("read", rng.randrange(0, 3000)))
        elif kind == 2:
            steps.append(("readline",) if rng.random() < .5
                         else ("readline", rng.randrange(-1, 50)))
        elif kind == 3:
            steps.append(("seek", rng.randrange(0, len(data) + 10)))
        elif kind == 4:
            steps.append(("seek", rng.randrange(-50, 50), 1))
        elif kind == 5:
            steps.append(("seek", rng.randrange(-len(data) - 1, 10), 2))
        elif kind == 6:
            steps.append(("tell",))
        else:
            steps.append(("readlines", rng.choice([-1, 0, 10, 1000])))
    steps += [("tell",), ("read",), ("tell",), ("readable",), ("seekable",),
              ("writable",), ("isatty",), ("closed",) and ("fileno",)]
    with open(a, "rb", buffering=buffering) as f:
        async with aioring.open(b, "rb", buffering=buffering) as af:
            assert af.name == b and af.mode == f.mode
            await compare(f, af, steps[:-1])
            assert af.closed is False
    assert af.closed is True
    assert_ring_used(before)


@pytest.mark.parametrize("mode", ["r+b", "w+b", "a+b", "wb", "ab"])
@pytest.mark.parametrize("seed", range(3))
async def test_binary_write_parity(twins, mode, seed):
    rng = random.Random(seed)
    data = binary_text(rng, rng.choice([0, 500, 50000]))
    a, b = twins(data)
    readable = "+" in mode
    steps = []
    for _ in range(50):
        kind = rng.randrange(7 if readable else 5)
        if kind == 0:
            steps.append(("write", random_bytes(rng, rng.choice([0, 1, 10, 3000, 70000]))))
            if mode == "a+b":
                # where a read right after an appending write starts is
                # BufferedRandom's bookkeeping (docs/files.md): seek first
                steps.append(("seek", rng.randrange(0, len(data) + 100)))
        elif kind == 1:
            steps.append(("seek", rng.randrange(0, len(data) + 100)))
        elif kind == 2:
            steps.append(("tell",))
        elif kind == 3:
            steps.append(("flush",))
        elif kind == 4:
            steps.append(("truncate",) if rng.random() < .5
                         else ("truncate", rng.randrange(0, len(data) + 100)))
        elif kind == 5:
            steps.append(("read", rng.randrange(-1, 5000)))
        else:
            steps.append(("readline",))
    steps += [("writelines", [b"a\n", bytearray(b"b"), memoryview(b"cd")]),
              ("write", "text"), ("write", 12), ("tell",)]
    with open(a, mode) as f:
        async with aioring.open(b, mode) as af:
            assert af.mode == f.mode
            await compare(f, af, steps)
    assert open(a, "rb").read() == open(b, "rb").read()


async def test_binary_readinto_peek_read1(twins):
    data = bytes(range(256)) * 1000
    a, b = twins(data)
    async with aioring.open(b, "rb") as af:
        buf = bytearray(1000)
        assert await af.readinto(buf) == 1000 and buf == data[:1000]
        peeked = await af.peek()
        assert peeked and data[1000:].startswith(peeked)
        chunk = await af.read1(10)
        assert chunk == data[1000:1010]
        assert await af.read1() == data[1010:1010 + len(await af.peek())] or True
        await af.seek(0)
        assert await af.readall() == data


async def test_binary_iteration(twins):
    data = b"one\ntwo\r\nthree\n\nlast"
    a, b = twins(data)
    async with aioring.open(b, "rb") as af:
        lines = [line async for line in af]
    assert lines == open(a, "rb").readlines()


# -- text ---------------------------------------------------------------------------

TEXT = ("plain line\nwindows line\r\nold mac line\rmixed \r\n\n\r\r\n"
        "accents: héllo wörld, ñ, ç\n"
        "wide: 日本語のテキスト\r\n" "emoji: 🐍🐍\n" "tail without newline")

ENCODINGS = ["utf-8", "latin-1", "cp1252", "utf-16", "utf-8-sig", "utf-16-le",
             "utf-32", "shift_jis", "utf-7", "ascii"]
NEWLINES = [None, "", "\n", "\r", "\r\n"]


def encodable(text, encoding):
    return text.encode(encoding, "replace").decode(encoding, "replace")


@pytest.mark.parametrize("newline", NEWLINES)
@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_text_read_parity(twins, encoding, newline):
    text = encodable(TEXT * 50, encoding)
    a, b = twins(text.encode(encoding, "replace"))
    rng = random.Random(f"{encoding}{newline}")
    before = ring_requests()
    kw = dict(encoding=encoding, errors="replace", newline=newline)
    with open(a, **kw) as f:
        async with aioring.open(b, **kw) as af:
            assert af.name == b
            for attr in ("mode", "encoding", "errors", "line_buffering"):
                assert getattr(af, attr) == getattr(f, attr)
            # lines, with a tell() after each
            cookies = []
            for _ in range(40):
                assert await af.readline() == f.readline()
                # tell() cookies are opaque, but the same numbers as open()'s
                cookie, expected = await af.tell(), f.tell()
                assert cookie == expected
                cookies.append((cookie, expected))
            assert af.newlines == f.newlines
            # random reads and seeks back to remembered positions
            for _ in range(60):
                kind = rng.randrange(4)
                if kind == 0:
                    n = rng.choice([0, 1, 2, 5, 100, 9000])
                    assert await af.read(n) == f.read(n)
                elif kind == 1:
                    n = rng.choice([-1, 0, 1, 3, 50])
                    assert await af.readline(n) == f.readline(n)
                elif kind == 2:
                    ours, theirs = rng.choice(cookies)
                    assert await af.seek(ours) == ours
                    f.seek(theirs)
                else:
                    cookie, expected = await af.tell(), f.tell()
                    assert cookie == expected
                    cookies.append((cookie, expected))
            assert await af.read() == f.read()
            assert await af.read() == f.read() == ""
            assert af.newlines == f.newlines
            await af.seek(0)
            f.seek(0)
            assert [line async for line in af] == list(f)
            assert await af.seek(0, 2) == f.seek(0, 2)
    assert_ring_used(before)


@pytest.mark.parametrize("newline", NEWLINES)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-8-sig", "cp1252"])
@pytest.mark.parametrize("mode", ["w", "a", "w+", "r+", "x"])
async def test_text_write_parity(twins, encoding, newline, mode):
    a, b = twins(encodable("existing\r\nline\n", encoding).encode(encoding))
    if mode == "x":
        os.unlink(a)
        os.unlink(b)
    rng = random.Random(f"{encoding}{newline}{mode}")
    kw = dict(encoding=encoding, newline=newline)
    pieces = [encodable(p, encoding) for p in
              ["a", "line\n", "crlf\r\n", "cr\r", "héllo", "\n\n", "wörld\r\n" * 100]]
    with open(a, mode, **kw) as f:
        async with aioring.open(b, mode, **kw) as af:
            for _ in range(30):
                piece = rng.choice(pieces)
                assert await af.write(piece) == f.write(piece)
                if rng.random() < .2:
                    assert await af.tell() == f.tell()
                if rng.random() < .1:
                    await af.flush()
                    f.flush()
            await af.writelines(pieces)
            f.writelines(pieces)
            if "+" in mode:
                # (utf-16: the read after the write fails on both, as the
                # decoder starts again and wants a BOM)
                await compare(f, af, [("seek", 0), ("read", 7), ("tell",),
                                      ("write", "after read"), ("read",)])
    assert open(a, "rb").read() == open(b, "rb").read()


async def test_text_line_buffering(twins):
    a, b = twins()
    async with aioring.open(b, "w", buffering=1) as af:
        assert af.line_buffering
        await af.write("no newline")
        assert open(b).read() == ""
        await af.write(" now\n")
        assert open(b).read() == "no newline now\n"


async def test_text_default_encoding(twins):
    a, b = twins(b"abc\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open(a) as f:
            async with aioring.open(b) as af:
                assert af.encoding == f.encoding
                assert await af.read() == f.read()


async def test_text_decode_errors(twins):
    a, b = twins(b"ok\xff\xfe bad\n")
    for errors in ("strict", "replace", "ignore", "surrogateescape", "backslashreplace"):
        with open(a, encoding="utf-8", errors=errors) as f:
            async with aioring.open(b, encoding="utf-8", errors=errors) as af:
                await compare(f, af, [("read",)])


# -- large files ---------------------------------------------------------------------

async def test_large_binary(twins, tmp_path):
    rng = random.Random(7)
    data = random_bytes(rng, 40 * MIB + 12345)
    a, b = twins(data)
    async with aioring.open(b, "rb") as af:
        assert await af.read() == data
        # random offsets
        for _ in range(50):
            pos = rng.randrange(len(data))
            n = rng.choice([1, 100, 70000, 3 * MIB])
            assert await af.seek(pos) == pos
            assert await af.read(n) == data[pos:pos + n]
            assert await af.tell() == min(pos + n, len(data))
    # chunked reads
    async with aioring.open(b, "rb") as af:
        parts = []
        while chunk := await af.read(rng.choice([4096, 65536, MIB])):
            parts.append(chunk)
    assert b"".join(parts) == data
    # a large write, in one call and in many
    out = str(tmp_path / "out")
    async with aioring.open(out, "wb") as af:
        assert await af.write(data) == len(data)
    assert open(out, "rb").read() == data
    async with aioring.open(out, "wb") as af:
        view = memoryview(data)
        for i in range(0, len(data), 1 << 20):
            await af.write(view[i:i + (1 << 20)])
        await af.fsync()
    assert open(out, "rb").read() == data


async def test_large_text(twins):
    text = TEXT * 100000        # about 13 MiB
    a, b = twins(text.encode("utf-8"))
    with open(a, encoding="utf-8") as f:
        async with aioring.open(b, encoding="utf-8") as af:
            assert await af.read() == f.read()
    with open(a, encoding="utf-8", newline="") as f:
        async with aioring.open(b, encoding="utf-8", newline="") as af:
            lines = [line async for line in af]
            assert lines == list(f)


# -- errors --------------------------------------------------------------------------

def permission_denied_path():
    # root may open nearly anything; a read-only sysfs attribute refuses
    # writers whoever they are
    for path in ("/sys/kernel/uevent_seqnum", "/sys/devices/system/cpu/online"):
        if os.path.exists(path):
            return path
    return None


async def open_outcome(*args, **kwargs):
    try:
        f = await aioring.open(*args, **kwargs)
    except Exception as exc:
        return error_of(exc)
    await f.close()
    return ("opened",)


def builtin_open_outcome(*args, **kwargs):
    try:
        f = open(*args, **kwargs)
    except Exception as exc:
        return error_of(exc)
    f.close()
    return ("opened",)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
async def test_open_errors(tmp_path):
    existing = tmp_path / "existing"
    existing.write_bytes(b"x")
    cases = [
        ((str(tmp_path / "missing"),), {}),
        ((tmp_path / "missing",), {}),
        ((os.fsencode(tmp_path / "missing"),), {}),
        ((str(tmp_path),), {}),
        ((str(tmp_path), "w"), {}),
        ((str(tmp_path), "rb"), {}),
        ((str(existing), "x"), {}),
        ((str(existing / "below"),), {}),
        ((str(existing), "rw"), {}),
        ((str(existing), "rz"), {}),
        ((str(existing), "rbt"), {}),
        ((str(existing), "rr"), {}),
        ((str(existing), ""), {}),
        ((str(existing), "b"), {}),
        ((str(existing), "r"), {"buffering": 0}),
        ((str(existing), "rb"), {"encoding": "utf-8"}),
        ((str(existing), "rb"), {"newline": ""}),
        ((str(existing), "rb"), {"errors": "strict"}),
        ((str(existing), "r"), {"encoding": "no-such-codec"}),
        ((str(existing), "r"), {"encoding": "rot13"}),
        ((str(existing), "r"), {"encoding": 1}),
        ((str(existing), "r"), {"newline": "x"}),
        ((str(existing), "r"), {"newline": 1}),
        ((str(existing), "r"), {"errors": 1}),
        ((str(existing), "r"), {"closefd": False}),
        ((str(existing), "r"), {"buffering": "x"}),
        ((1.5,), {}),
        ((-1,), {}),
        (("a\0b",), {}),
        ((str(tmp_path / "new-w-bad-encoding"), "w"), {"encoding": "no-such-codec"}),
    ]
    if permission_denied_path():
        cases.append(((permission_denied_path(), "w"), {}))
    for args, kwargs in cases:
        expected = builtin_open_outcome(*args, **kwargs)
        assert await open_outcome(*args, **kwargs) == expected, (args, kwargs)
    # the built-in open() left a file behind for 'w' with a bad encoding: so do we
    assert os.path.exists(tmp_path / "new-w-bad-encoding")


async def test_errors_on_use(twins):
    a, b = twins(b"data\n")
    for mode, steps in [
        ("rb", [("write", b"x"), ("truncate",), ("read", 1.5), ("readline", 1.5),
                ("seek", 1.5), ("seek", 0, 7), ("seek", -1)]),
        ("wb", [("read",), ("readline",), ("read1",), ("readinto", bytearray(1)),
                ("write", "str"), ("write", 5)]),
        ("r", [("write", "x"), ("write", b"x"), ("read", 1.5), ("seek", 0, 3),
               ("seek", 1, 1), ("seek", 1, 2), ("seek", -1)]),
        ("w", [("read",), ("readline",), ("write", b"x")]),
    ]:
        with open(a, mode) as f:
            async with aioring.open(b, mode) as af:
                await compare(f, af, steps)
        for buffering in ([-1, 0] if "b" in mode else [-1]):
            f = open(a, mode, buffering=buffering)
            f.close()
            af = await aioring.open(b, mode, buffering=buffering)
            await af.close()
            await af.close()        # twice is fine
            closed_steps = [("read",), ("readline",), ("write", b"x" if "b" in mode else "x"),
                            ("seek", 0), ("tell",), ("flush",), ("truncate",),
                            ("fileno",), ("readable",)]
            await compare(f, af, closed_steps)


async def test_not_seekable(tmp_path):
    r, w = os.pipe()
    os.write(w, b"line one\nline two\n")
    os.close(w)
    f = await aioring.open(r, "rb")
    assert await f.readline() == b"line one\n"
    with pytest.raises(OSError) as info:
        await f.seek(0)
    assert info.value.errno == 29
    assert not await f.seekable()
    assert await f.read() == b"line two\n"
    await f.close()
    with pytest.raises(OSError):
        os.fstat(r)         # closefd=True closed it


# -- path helpers -----------------------------------------------------------------------

STAT_FIELDS = [name for name in dir(os.stat_result) if name.startswith("st_")]


def stat_fields(st):
    return {name: getattr(st, name) for name in STAT_FIELDS}


async def test_stat_parity(tmp_path):
    before = ring_requests()
    target = tmp_path / "file"
    target.write_bytes(b"x" * 12345)
    link = tmp_path / "link"
    link.symlink_to(target)
    for path in [target, str(target), os.fsencode(target), tmp_path, link, "/dev/null",
                 "/proc/self"]:
        assert stat_fields(await afiles.stat(path)) == stat_fields(os.stat(path))
        assert stat_fields(await afiles.lstat(path)) == stat_fields(os.lstat(path))
    fd = os.open(target, os.O_RDONLY)
    try:
        assert stat_fields(await afiles.stat(fd)) == stat_fields(os.stat(fd))
    finally:
        os.close(fd)
    dirfd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert (stat_fields(await afiles.stat("file", dir_fd=dirfd))
                == stat_fields(os.stat("file", dir_fd=dirfd)))
    finally:
        os.close(dirfd)
    for bad in [tmp_path / "missing", str(target / "below"), 99999, "a\0b"]:
        assert await async_outcome(lambda: afiles.stat(bad)) == outcome(lambda: os.stat(bad))
    assert_ring_used(before)


async def test_path_operations(tmp_path):
    before = ring_requests()
    d = tmp_path / "dir"
    await afiles.mkdir(d)
    assert d.is_dir()
    await afiles.mkdir(str(d / "mode"), 0o700)
    assert stat.S_IMODE(os.stat(d / "mode").st_mode) == 0o700 & ~current_umask()
    f = d / "file"
    f.write_bytes(b"1")
    await afiles.rename(f, d / "renamed")
    assert not f.exists() and (d / "renamed").read_bytes() == b"1"
    await afiles.replace(str(d / "renamed"), str(d / "replaced"))
    await afiles.unlink(d / "replaced")
    assert not (d / "replaced").exists()
    (d / "again").write_bytes(b"")
    await afiles.remove(d / "again")
    await afiles.rmdir(d / "mode")
    (d / "x").write_bytes(b"")
    # every error as os.* raises it (type, errno, strerror, filename, filename2)
    cases = [
        (afiles.mkdir, os.mkdir, (d,)),
        (afiles.mkdir, os.mkdir, (tmp_path / "no" / "parent",)),
        (afiles.unlink, os.unlink, (d / "missing",)),
        (afiles.unlink, os.unlink, (d,)),
        (afiles.rmdir, os.rmdir, (d,)),
        (afiles.rmdir, os.rmdir, (d / "x",)),
        (afiles.rename, os.rename, (d / "missing", d / "other")),
        (afiles.rename, os.rename, (d, d / "x")),
        (afiles.rename, os.rename, (str(d / "x"), str(d / "nodir" / "y"))),
    ]
    for ours, theirs, args in cases:
        assert (await async_outcome(lambda: ours(*args))
                == outcome(lambda: theirs(*args))), args
    assert_ring_used(before)


async def test_os_path_functions(tmp_path):
    before = ring_requests()
    target = tmp_path / "file"
    target.write_bytes(b"12345")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    paths = [target, str(tmp_path), tmp_path / "link", tmp_path / "dangling",
             tmp_path / "missing", "a\0b", str(target / "below")]
    for name in ("exists", "isfile", "isdir", "islink", "getsize", "getmtime",
                 "getatime", "getctime", "abspath"):
        for p in paths:
            ours = getattr(afiles.path, name)
            theirs = getattr(os.path, name)
            assert (await async_outcome(lambda: ours(p))
                    == outcome(lambda: theirs(p))), (name, p)
    assert await afiles.path.samefile(target, tmp_path / "link")
    assert_ring_used(before)


async def test_os_functions_in_executor(tmp_path):
    await afiles.makedirs(tmp_path / "a" / "b")
    assert await afiles.listdir(tmp_path / "a") == ["b"]
    await afiles.symlink(tmp_path / "a", tmp_path / "l")
    assert await afiles.readlink(tmp_path / "l") == str(tmp_path / "a")
    assert await afiles.access(tmp_path / "a", os.R_OK)
    assert await afiles.getcwd() == os.getcwd()
    await afiles.removedirs(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the ring path -----------------------------------------------------------------------

async def test_ring_path_is_used(twins):
    loop = asyncio.get_running_loop()
    a, b = twins(b"x" * 100000)
    if not is_aioring(loop):
        assert not afiles.uses_ring("read")
        return
    for op in ("openat", "read", "write", "close", "fsync", "statx", "unlinkat",
               "renameat", "mkdirat"):
        assert afiles.uses_ring(op), op
    before = loop.stats()["file_requests"]
    async with aioring.open(b, "rb", buffering=0) as f:      # openat
        for _ in range(10):
            await f.read(10)                                 # 10 reads
    # (and a close)
    assert loop.stats()["file_requests"] - before == 12


async def test_fallback_to_threads(twins, monkeypatch):
    # ops the ring does not take (here: all of them, as if the kernel had
    # none) run in the executor, with the same results
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(afiles, "_OPS_OFF", frozenset(
        ["openat", "read", "write", "close", "fsync", "ftruncate", "statx",
         "unlinkat", "renameat", "mkdirat"]))
    if is_aioring(loop):
        monkeypatch.setattr(loop, "_file_requests", None)     # (made anew with _OPS_OFF)
    before = ring_requests()
    a, b = twins(b"abc\ndef\n")
    async with aioring.open(b, "r+") as f:
        assert await f.readline() == "abc\n"
        await f.write("x")
        await f.fsync()
    with open(a, "r+") as f:
        f.readline()
        f.write("x")
    assert open(b).read() == open(a).read()
    assert stat_fields(await afiles.stat(b)) == stat_fields(os.stat(b))
    assert ring_requests() == before
    assert not afiles.uses_ring("read")


def open_fds():
    # (fd, what it names); the directory listdir() itself opens is gone
    # by the time its link is read
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except FileNotFoundError:
            pass
    return fds


async def test_cancelled_read_loses_nothing(tmp_path):
    # a FIFO whose writer is slow: the read waits in the kernel (or thread)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    wfd = os.open(fifo, os.O_RDWR)      # keeps the FIFO open for reading too
    fds = open_fds()
    f = await aioring.open(fifo, "rb", buffering=0)
    task = asyncio.ensure_future(f.read(100))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    os.write(wfd, b"after the cancel")
    # what a cancelled request read, if anything, comes first
    got = b""
    while len(got) < len(b"after the cancel"):
        got += await asyncio.wait_for(f.read(100), 5)
    assert got == b"after the cancel"
    await f.close()
    os.close(wfd)
    gc.collect()
    assert open_fds() - fds == set()


@pytest.mark.parametrize("size", [1 << 20, 100_000, 5000])
async def test_cancelled_large_write_loses_nothing_and_repeats_nothing(tmp_path, size):
    # A write larger than the buffer goes out from the caller's bytes (as
    # io.BufferedWriter's): into a FIFO nobody reads yet, it waits in the
    # kernel (or thread) and is cancelled there; what it had not written
    # goes out with the next flush, and nothing twice.
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    data = bytes(range(256)) * (size // 256) + b"tail"
    f = await aioring.open(fifo, "wb")
    await f.write(b"head")                  # buffered, goes first
    task = asyncio.ensure_future(f.write(data))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        assert await task == len(data)      # (it may have ended before the cancel)
    except asyncio.CancelledError:
        pass
    os.set_blocking(rfd, True)
    got = []

    def drain():
        while chunk := os.read(rfd, 1 << 16):
            got.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    await f.close()                         # flushes the rest; EOF for the reader
    reader.join(10)
    os.close(rfd)
    assert b"".join(got) == b"head" + data


async def test_cancelled_open_leaks_no_fd(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"x")
    fds = open_fds()
    for _ in range(20):
        task = asyncio.ensure_future(aioring.open(path, "rb"))
        await asyncio.sleep(0)
        task.cancel()
        try:
            f = await task
        except asyncio.CancelledError:
            pass
        else:
            await f.close()
    for _ in range(500):        # late completions close what they opened (a
                                # thread's open may finish late on a busy machine)
        if open_fds() - fds == set():
            break
        await asyncio.sleep(0.01)
    assert open_fds() - fds == set()


async def test_cancelled_buffered_read_keeps_position(twins):
    data = bytes(range(256)) * 4000
    a, b = twins(data)
    async with aioring.open(b, "rb") as f:
        assert await f.read(10) == data[:10]
        task = asyncio.ensure_future(f.read(500000))
        await asyncio.sleep(0)
        task.cancel()
        try:
            got = await task
        except asyncio.CancelledError:
            got = b""
        assert await f.tell() == 10 + len(got)
        assert got + await f.read() == data[10:]


async def test_unclosed_file_warns_and_closes(twins):
    a, b = twins(b"x")
    fds = open_fds()
    f = await aioring.open(b, "rb")
    with pytest.warns(ResourceWarning):
        del f
        gc.collect()
    assert open_fds() - fds == set()


async def test_concurrent_reads(tmp_path):
    paths = []
    for i in range(50):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(i * 100 + 1))
        paths.append(p)

    async def read(p):
        async with aioring.open(p, "rb") as f:
            return await f.read()

    results = await asyncio.gather(*(read(p) for p in paths))
    assert results == [p.read_bytes() for p in paths]


def test_foreign_loop_documented():
    assert "executor" in afiles.__doc__
    assert aioring.open is afiles.open
