"""loop.sendfile (native path over TCP and Unix stream transports, the
read-and-write fallback for TLS transports and file objects) and
loop.sock_sendfile: parity with the stock loop for what the program and
the receiver observe (bytes received, return values, file positions,
exceptions).

Every test runs on the stock loop and on aioring (conftest hook); the
assertions are the stock loop's behaviour, and where a record is compared
it is with a run on a fresh stock loop in a worker thread (`same_as_stock`).
The receiver hashes what it gets, so the 100 MiB transfer needs no copy.
"""
import asyncio
import hashlib
import io
import os
import re
import socket
import tempfile

import pytest

import _tls_helpers as tls
from _stream_helpers import (
    Factory, Recorder, exc_record, same_as_stock, skip_unless_kind, wait)

MiB = 1 << 20
BIG = 100 * MiB
SMALL = 2 * MiB + 123


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """100 MiB of random bytes on disk, and the sha256 of b"head" + its
    content + b"tail" (what the receiver of the 100 MiB test gets)."""
    path = tmp_path_factory.mktemp("sendfile") / "big"
    h = hashlib.sha256(b"head")
    with open(path, "wb") as f:
        for _ in range(BIG // (4 * MiB)):
            chunk = os.urandom(4 * MiB)
            h.update(chunk)
            f.write(chunk)
    h.update(b"tail")
    yield str(path), h.hexdigest()
    path.unlink()


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sendfile") / "small"
    data = os.urandom(SMALL)
    path.write_bytes(data)
    return str(path), data


class Sink(asyncio.Protocol):
    """A receiver that hashes what it gets (and keeps it if `keep`)."""

    def __init__(self, keep=False, paused=False):
        loop = asyncio.get_running_loop()
        self.keep = keep
        self.paused = paused
        self.data = bytearray()
        self.n = 0
        self.h = hashlib.sha256()
        self.events = []
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, t):
        self.transport = t
        self.events.append("made")
        if self.paused:
            t.pause_reading()
        self.made.set_result(t)

    def data_received(self, data):
        if self.events[-1] != "data":
            self.events.append("data")
        self.n += len(data)
        self.h.update(data)
        if self.keep:
            self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        self.lost.set_result(exc)


class Conn:
    """A server with a Sink and one client transport (a Recorder)."""

    async def open(self, kind, sdir=None, keep=False, paused=False, ssl_on=False):
        loop = asyncio.get_running_loop()
        skip_unless_kind(kind)
        self.sf = Factory(Sink, keep=keep, paused=paused)
        skw, ckw = {}, {}
        if ssl_on:
            skw = {"ssl": tls.server_context()}
            ckw = {"ssl": tls.client_context(), "server_hostname": "localhost"}
        if kind == "unix":
            path = os.path.join(sdir, "sf%d.sock" % len(os.listdir(sdir)))
            self.server = await loop.create_unix_server(self.sf, path, **skw)
            self.ct, self.cp = await wait(loop.create_unix_connection(Recorder, path, **ckw))
        else:
            host = "127.0.0.1" if kind == "tcp4" else "::1"
            self.server = await loop.create_server(self.sf, host, 0, **skw)
            port = self.server.sockets[0].getsockname()[1]
            self.ct, self.cp = await wait(loop.create_connection(Recorder, host, port, **ckw))
        self.sp = await self.sf.next()
        await wait(self.sp.made)
        return self

    async def finish(self):
        """Close the client and wait until the receiver has everything."""
        self.ct.close()
        await wait(self.sp.lost, 60)

    async def aclose(self):
        for t in (self.ct, getattr(self.sp, "transport", None)):
            if t is not None and not t.is_closing():
                t.abort()
        self.server.close()
        await asyncio.sleep(0)


async def conn(kind="tcp4", sdir=None, **kw):
    return await Conn().open(kind, sdir, **kw)


def norm(exc, *strip):
    if exc is None:
        return None
    name, err, text = exc_record(exc, *strip)
    text = re.sub(r"<\S*(Transport|socket|_io|Protocol)\b.*>", "<R>", text)
    text = re.sub(r"\bfd=\d+", "fd=<N>", text)
    return (name, err, text)


# -- the native path: 100 MiB over TCP, then the other kinds -------------------------------


@pytest.mark.timeout(180)
async def test_sendfile_100_mib_over_tcp(big_file):
    loop = asyncio.get_running_loop()
    path, expected = big_file
    c = await conn("tcp4")
    try:
        with open(path, "rb") as f:
            c.ct.write(b"head")
            sent = await wait(loop.sendfile(c.ct, f), 150)
            assert sent == BIG
            assert f.tell() == BIG
        c.ct.write(b"tail")
        # the transport reads again after sendfile
        assert c.ct.is_reading() is True
        c.sp.transport.write(b"ack")
        await c.cp.wait_data(3)
        assert bytes(c.cp.data) == b"ack"
        await c.finish()
        assert c.sp.n == BIG + 8
        # head + file + tail, in that order
        assert c.sp.h.hexdigest() == expected
        assert c.sp.events == ["made", "data", "eof", ("lost", None)]
        assert c.cp.events == ["made", "data", ("lost", None)]
    finally:
        await c.aclose()


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "unix"])
async def test_sendfile_each_stream_kind(kind, small_file, sdir):
    loop = asyncio.get_running_loop()
    path, data = small_file
    c = await conn(kind, sdir, keep=True)
    try:
        with open(path, "rb") as f:
            assert await wait(loop.sendfile(c.ct, f)) == len(data)
            assert f.tell() == len(data)
        await c.finish()
        assert bytes(c.sp.data) == data
    finally:
        await c.aclose()


async def _offset_count_variants(path):
    loop = asyncio.get_running_loop()
    size = os.path.getsize(path)
    variants = [
        ("whole", 0, None, 0),
        ("whole_from_moved_position", 0, None, 500),
        ("offset", 1000, None, 0),
        ("offset_count", 1000, 70000, 0),
        ("count_one", 0, 1, 0),
        ("count_beyond_eof", size - 10, 1000, 0),
        ("offset_near_eof", size - 10, None, 0),
        ("offset_at_eof", size, None, 123),
        ("offset_beyond_eof", size + 100, None, 123),
        ("count_whole_file", 0, size, 0),
    ]
    rec = {}
    with open(path, "rb") as f:
        data = f.read()
    for name, offset, count, start in variants:
        c = await conn("tcp4", keep=True)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                sent = await wait(loop.sendfile(c.ct, f, offset, count))
                tell = f.tell()
            await c.finish()
            end = size if count is None else min(size, offset + count)
            rec[name] = {"sent": sent, "tell": tell,
                         "received_ok": bytes(c.sp.data) == data[offset:end],
                         "received": len(c.sp.data)}
        finally:
            await c.aclose()
    return rec


async def test_offset_and_count_variants_same_as_stock(small_file):
    path, data = small_file
    rec = await same_as_stock(_offset_count_variants, path, timeout=60)
    assert all(v["received_ok"] for v in rec.values())
    assert rec["whole"] == {"sent": SMALL, "tell": SMALL, "received_ok": True,
                            "received": SMALL}
    # offset is where sending starts, whatever the file position was
    assert rec["whole_from_moved_position"]["sent"] == SMALL
    assert rec["offset_count"]["sent"] == 70000
    assert rec["offset_count"]["tell"] == 71000
    assert rec["count_beyond_eof"]["sent"] == 10
    assert rec["offset_at_eof"]["sent"] == 0


async def test_sendfile_waits_for_a_slow_receiver(small_file):
    # The receiver does not read: sendfile cannot finish until it does.
    loop = asyncio.get_running_loop()
    path, data = small_file
    big = os.urandom(16 * MiB)
    fpath = path + ".16m"
    with open(fpath, "wb") as f:
        f.write(big)
    c = await conn("tcp4", paused=True, keep=True)
    try:
        with open(fpath, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(c.ct, f))
            await asyncio.sleep(0.2)
            assert not task.done()
            c.sp.transport.resume_reading()
            assert await wait(task, 30) == len(big)
            assert f.tell() == len(big)
        await c.finish()
        assert bytes(c.sp.data) == big
    finally:
        os.unlink(fpath)
        await c.aclose()


async def test_data_written_before_sendfile_goes_first(small_file):
    # Data queued in the transport (the receiver is paused, so it stays
    # queued) is sent before the file, and data written after sendfile()
    # returns comes after it.
    loop = asyncio.get_running_loop()
    path, data = small_file
    c = await conn("tcp4", paused=True, keep=True)
    try:
        head = os.urandom(8 * MiB)
        c.ct.write(head)
        await asyncio.sleep(0.05)
        assert c.ct.get_write_buffer_size() > 0
        with open(path, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(c.ct, f))
            await asyncio.sleep(0.05)
            assert not task.done()
            c.sp.transport.resume_reading()
            assert await wait(task, 30) == len(data)
        c.ct.write(b"tail")
        await c.finish()
        assert bytes(c.sp.data) == head + data + b"tail"
    finally:
        await c.aclose()


async def _cancelled_sendfile(path):
    loop = asyncio.get_running_loop()
    big = os.urandom(16 * MiB)
    fpath = path + ".cancel"
    with open(fpath, "wb") as f:
        f.write(big)
    c = await conn("tcp4", paused=True, keep=True)
    rec = {}
    try:
        with open(fpath, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(c.ct, f))
            await asyncio.sleep(0.1)
            task.cancel()
            try:
                await wait(task)
                rec["result"] = "ok"
            except asyncio.CancelledError:
                rec["result"] = "cancelled"
            tell = f.tell()
        rec["transport_reading"] = c.ct.is_reading()
        rec["transport_closing"] = c.ct.is_closing()
        c.sp.transport.resume_reading()
        c.ct.write(b"after")
        await c.finish()
        got = bytes(c.sp.data)
        rec["ends_with_after"] = got.endswith(b"after")
        n = len(got) - 5
        rec["received_a_prefix"] = 0 < n < len(big) and got[:n] == big[:n]
        rec["tell_is_start"] = tell == 0
        rec["tell_matches_received"] = tell == n
    finally:
        os.unlink(fpath)
        await c.aclose()
    return rec


async def test_cancelled_sendfile_same_as_stock(small_file):
    rec = await same_as_stock(_cancelled_sendfile, small_file[0], timeout=30)
    assert rec["result"] == "cancelled"
    assert rec["transport_closing"] is False
    assert rec["ends_with_after"] and rec["received_a_prefix"]


async def test_peer_closes_during_sendfile(small_file):
    loop = asyncio.get_running_loop()
    big = os.urandom(32 * MiB)
    fpath = small_file[0] + ".reset"
    with open(fpath, "wb") as f:
        f.write(big)
    c = await conn("tcp4", paused=True)
    try:
        with open(fpath, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(c.ct, f))
            await asyncio.sleep(0.1)
            assert not task.done()
            c.sp.transport.abort()          # with unread data: a reset
            with pytest.raises(ConnectionError):
                await wait(task)
            assert 0 < f.tell() < len(big)
        await wait(c.cp.lost)
    finally:
        os.unlink(fpath)
        await c.aclose()


# -- the fallback: TLS transports, file objects without a descriptor -----------------------------


async def test_sendfile_over_tls_uses_the_fallback(small_file):
    loop = asyncio.get_running_loop()
    path, data = small_file
    c = await conn("tcp4", keep=True, ssl_on=True)
    try:
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError, match="fallback is disabled"):
                await wait(loop.sendfile(c.ct, f, fallback=False))
            assert f.tell() == 0
            assert await wait(loop.sendfile(c.ct, f)) == len(data)
            assert f.tell() == len(data)
            assert await wait(loop.sendfile(c.ct, f, 1000, 5000)) == 5000
            assert f.tell() == 6000
        assert c.ct.is_reading() is True
        c.ct.write(b"end")
        await c.finish()
        assert bytes(c.sp.data) == data + data[1000:6000] + b"end"
    finally:
        await c.aclose()


async def _fallback_with_a_file_object(path):
    # A file object without a descriptor: the read-and-write fallback.  (On
    # the stock loop the fallback seeks only for a non-zero offset, so
    # offset=0 sends from the current position, and the position after it
    # is 0 + bytes sent: recorded as is.)
    loop = asyncio.get_running_loop()
    with open(path, "rb") as f:
        data = f.read()
    c = await conn("tcp4", keep=True)
    rec = {}
    try:
        f = io.BytesIO(data)
        try:
            await wait(loop.sendfile(c.ct, f, fallback=False))
            rec["no_fallback"] = "ok"
        except Exception as exc:
            rec["no_fallback"] = norm(exc)
        rec["tell_after_refusal"] = f.tell()
        rec["offset_count"] = (await wait(loop.sendfile(c.ct, f, 10, 1000)), f.tell())
        rec["default_offset"] = (await wait(loop.sendfile(c.ct, f)), f.tell())
        f.seek(0)
        rec["from_start"] = (await wait(loop.sendfile(c.ct, f)), f.tell())
        rec["reading_after"] = c.ct.is_reading()
        await c.finish()
        got = bytes(c.sp.data)
        n = rec["default_offset"][0]
        rec["received_ok"] = got == data[10:1010] + data[1010:1010 + n] + data
    finally:
        await c.aclose()
    return rec


async def test_sendfile_fallback_with_a_file_object_same_as_stock(small_file):
    rec = await same_as_stock(_fallback_with_a_file_object, small_file[0])
    assert rec["no_fallback"][0] == "SendfileNotAvailableError"
    assert rec["offset_count"] == (1000, 1010)
    assert rec["from_start"] == (SMALL, SMALL)
    assert rec["received_ok"] is True
    assert rec["reading_after"] is True


async def _unsupported_transports(path, sdir):
    loop = asyncio.get_running_loop()
    rec = {}
    c = await conn("tcp4")
    r, w = os.pipe()
    pt = None
    try:
        with open(path, "rb") as f:
            pt, pp = await wait(loop.connect_write_pipe(Recorder, open(w, "wb", buffering=0)))
            for name, t in (("pipe", pt),):
                for fb in (True, False):
                    try:
                        await wait(loop.sendfile(t, f, fallback=fb))
                        rec[f"{name}_{fb}"] = "ok"
                    except Exception as exc:
                        rec[f"{name}_{fb}"] = norm(exc)
            c.ct.close()
            for fb in (True, False):
                try:
                    await wait(loop.sendfile(c.ct, f, fallback=fb))
                    rec[f"closing_{fb}"] = "ok"
                except Exception as exc:
                    rec[f"closing_{fb}"] = norm(exc)
            rec["tell"] = f.tell()
    finally:
        os.close(r)
        if pt is not None:
            pt.close()
        await c.aclose()
    return rec


async def test_unsupported_transports_same_as_stock(small_file, sdir):
    rec = await same_as_stock(_unsupported_transports, small_file[0], sdir)
    assert rec["pipe_True"][0] == "RuntimeError"
    assert rec["closing_True"] == ("RuntimeError", None, "Transport is closing")
    assert rec["tell"] == 0


# -- bad arguments ------------------------------------------------------------------------------


async def _bad_arguments(path, sdir, ssl_on):
    loop = asyncio.get_running_loop()
    sub = tempfile.mkdtemp(dir=sdir)
    tpath = os.path.join(sub, "text")
    with open(tpath, "w") as f:
        f.write("text file\n")
    rec = {}
    c = await conn("tcp4", keep=True, ssl_on=ssl_on)
    try:
        with open(path, "rb") as f, open(tpath, "r") as tf:
            cases = {
                "text_file": (tf, 0, None),
                "count_zero": (f, 0, 0),
                "count_negative": (f, 0, -1),
                "count_str": (f, 0, "1"),
                "count_float": (f, 0, 1.0),
                "offset_negative": (f, -1, None),
                "offset_float": (f, 1.5, None),
                "offset_str": (f, "0", None),
            }
            for name, (fobj, offset, count) in cases.items():
                fobj.seek(0)
                try:
                    n = await wait(loop.sendfile(c.ct, fobj, offset, count))
                    rec[name] = ("ok", n, fobj.tell())
                except Exception as exc:
                    # over TLS (the fallback) the stock loop checks nothing
                    # itself: what fails is whatever its read/seek/write
                    # calls raise, so only the type is compared
                    rec[name] = type(exc).__name__ if ssl_on else norm(exc, sub)
        rec["reading_after"] = c.ct.is_reading()
        rec["closing_after"] = c.ct.is_closing()
        c.ct.write(b"still usable")
        await c.finish()
        rec["received_len"] = len(c.sp.data)
        rec["received_tail"] = bytes(c.sp.data[-12:])
    finally:
        await c.aclose()
    return rec


@pytest.mark.parametrize("ssl_on", [False, True], ids=["tcp", "tls"])
async def test_bad_arguments_same_as_stock(ssl_on, small_file, sdir):
    rec = await same_as_stock(_bad_arguments, small_file[0], sdir, ssl_on, timeout=30)
    assert rec["received_tail"] == b"still usable"
    if not ssl_on:
        assert rec["text_file"] == ("ValueError", None, "file should be opened in binary mode")
        assert rec["count_zero"] == ("ValueError", None, "count must be a positive integer (got 0)")
        assert rec["count_str"][0] == "TypeError"
        assert rec["offset_negative"][0] == "ValueError"
        assert rec["offset_float"][0] == "TypeError"
        assert rec["reading_after"] is True


# -- loop.sock_sendfile ----------------------------------------------------------------------------


def stream_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def recv_all(sock):
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while True:
        chunk = await wait(loop.sock_recv(sock, 1 << 20))
        if not chunk:
            return bytes(buf)
        buf += chunk


async def _sock_sendfile_variants(path, sdir):
    loop = asyncio.get_running_loop()
    sub = tempfile.mkdtemp(dir=sdir)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read()
    empty = os.path.join(sub, "empty")
    open(empty, "wb").close()
    rec = {}
    for name, offset, count, start, fallback in (
            ("whole", 0, None, 0, True),
            ("offset_count", 1000, 70000, 0, False),
            ("moved_position", 0, 100, 777, True),
            ("count_beyond_eof", size - 5, 100, 0, True),
            ("offset_beyond_eof", size + 5, None, 9, True)):
        a, b = stream_pair()
        try:
            with open(path, "rb") as f:
                f.seek(start)
                sent, got = await wait(asyncio.gather(
                    send_then_shut(a, loop.sock_sendfile(a, f, offset, count,
                                                         fallback=fallback)),
                    recv_all(b)))
                end = size if count is None else min(size, offset + count)
                rec[name] = (sent, f.tell(), got == data[offset:end])
        finally:
            a.close()
            b.close()
    a, b = stream_pair()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    blocking_a, blocking_b = socket.socketpair()
    ctx = tls.client_context()
    sslsock = ctx.wrap_socket(socket.socket(), server_hostname="localhost",
                              do_handshake_on_connect=False)
    try:
        with open(path, "rb") as f, open(empty, "rb") as ef, open(path, "r") as tf:
            cases = {
                "text_file": lambda: loop.sock_sendfile(a, tf),
                "count_zero": lambda: loop.sock_sendfile(a, f, 0, 0),
                "count_str": lambda: loop.sock_sendfile(a, f, 0, "1"),
                "offset_negative": lambda: loop.sock_sendfile(a, f, -1),
                "offset_float": lambda: loop.sock_sendfile(a, f, 0.5),
                "udp_socket": lambda: loop.sock_sendfile(udp, f),
                "ssl_socket": lambda: loop.sock_sendfile(sslsock, f),
                "bytesio_no_fallback": lambda: loop.sock_sendfile(
                    a, io.BytesIO(b"abc"), fallback=False),
                "empty_file": lambda: loop.sock_sendfile(a, ef),
                "blocking_socket_outside_debug": lambda: loop.sock_sendfile(
                    blocking_a, f, 0, 10),
            }
            for name, make in cases.items():
                try:
                    rec[name] = ("ok", await wait(make()))
                except Exception as exc:
                    rec[name] = norm(exc, sub)
            rec["empty_file_tell"] = ef.tell()
            loop.set_debug(True)
            try:
                await wait(loop.sock_sendfile(blocking_a, f, 0, 10))
                rec["blocking_socket_in_debug"] = "ok"
            except Exception as exc:
                rec["blocking_socket_in_debug"] = norm(exc)
            finally:
                loop.set_debug(False)
    finally:
        for s in (a, b, udp, blocking_a, blocking_b, sslsock):
            s.close()
    return rec


async def send_then_shut(a, coro):
    n = await coro
    a.shutdown(socket.SHUT_WR)
    return n


async def test_sock_sendfile_same_as_stock(small_file, sdir):
    rec = await same_as_stock(_sock_sendfile_variants, small_file[0], sdir, timeout=30)
    assert rec["whole"] == (SMALL, SMALL, True)
    assert rec["offset_count"] == (70000, 71000, True)
    assert rec["moved_position"] == (100, 100, True)
    assert rec["count_beyond_eof"][0] == 5
    assert rec["offset_beyond_eof"][0] == 0
    assert rec["text_file"][0] == "ValueError"
    assert rec["count_zero"][0] == "ValueError"
    assert rec["count_str"][0] == "TypeError"
    assert rec["udp_socket"] == ("ValueError", None,
                                 "only SOCK_STREAM type sockets are supported")
    assert rec["ssl_socket"][0] == "TypeError"
    assert rec["bytesio_no_fallback"][0] == "SendfileNotAvailableError"
    assert rec["empty_file"] == ("ok", 0)
    assert rec["blocking_socket_in_debug"] == ("ValueError", None,
                                               "the socket must be non-blocking")
