"""TLS: ssl= on create_connection / create_server / create_unix_* /
open_connection / start_server, start_tls, server_hostname, the handshake
and shutdown timeouts, close_notify, large transfers with flow control:
parity with the stock loop for what the program and the peer observe.

Every test runs on the stock loop and on aioring (conftest hook); the
assertions are the stock loop's behaviour, and where the stock loop's
behaviour depends on the Python version the scenario is run again on a
fresh stock loop in a worker thread and the records are compared
(`same_as_stock`).  Certificates are made at test time with the openssl
command line tool (_tls_helpers).  Some peers are plain blocking ssl
sockets in a thread, so that the peer does exactly what a test needs
(stop reading, never answer close_notify, close without close_notify).
"""
import asyncio
import functools
import hashlib
import os
import re
import socket
import ssl
import tempfile
import threading

import pytest

import _tls_helpers as tls
from _stream_helpers import (
    Factory, Recorder, exc_record, open_pair, same_as_stock, sha,
    skip_unless_kind, until, wait)

MiB = 1 << 20
HOST = "localhost"

KINDS = ["tcp4", "tcp6", "unix"]


@pytest.fixture(params=KINDS)
def kind(request):
    skip_unless_kind(request.param)
    return request.param


def echo(p, data):
    p.transport.write(data)


def tls_kw(server_ctx=None, client_ctx=None, **client_extra):
    server_ctx = server_ctx or tls.server_context()
    client_ctx = client_ctx or tls.client_context()
    return {"server_kw": {"ssl": server_ctx},
            "client_kw": {"ssl": client_ctx, "server_hostname": HOST, **client_extra}}


def norm(exc, *strip):
    """exc_record with transport/socket reprs and ports masked."""
    if exc is None:
        return None
    name, err, text = exc_record(exc, *strip)
    text = re.sub(r"<\S*(Transport|socket|Protocol)\b.*>", "<R>", text)
    text = re.sub(r"\b\d{4,5}\b", "<PORT>", text)
    return (name, err, text)


def handshake_in_thread(sock, ctx, server_side, then, server_hostname=None):
    """Run a blocking TLS handshake on `sock` in a daemon thread, then
    `then(ssl_sock)`; returns the thread.  Errors end the thread quietly."""

    def run():
        try:
            sock.settimeout(10)
            s = ctx.wrap_socket(sock, server_side=server_side,
                                server_hostname=server_hostname)
            then(s)
        except (OSError, ValueError):
            pass
        finally:
            sock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class ThreadPeer:
    """A TLS server (one connection) whose connection runs `then(ssl_sock)`
    in a thread; `release` ends a peer that waits."""

    def __init__(self, then, ctx=None):
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.addr = self.lsock.getsockname()
        self.ctx = ctx or tls.server_context()
        self.release = threading.Event()
        self.then = then
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.lsock.settimeout(10)
            conn, _ = self.lsock.accept()
        except OSError:
            return
        handshake_in_thread(conn, self.ctx, True, self._then)

    def _then(self, s):
        self.then(self, s)

    def close(self):
        self.release.set()
        self.lsock.close()


# -- echo over TLS: events, extra info, the transport's API ------------------------------


async def test_tls_echo_and_callback_order(kind, sdir):
    pair = await open_pair(kind, sdir, Factory(on_data=echo), **tls_kw())
    try:
        payload = os.urandom(300_000)
        for i in range(0, len(payload), 10_000):
            pair.ct.write(payload[i:i + 10_000])
        await pair.cp.wait_data(len(payload))
        assert sha(pair.cp.data) == sha(payload)
        assert sha(pair.sp.data) == sha(payload)
        pair.ct.close()
        assert pair.ct.is_closing()
        assert await wait(pair.cp.lost) is None
        assert await wait(pair.sp.lost) is None
        # close_notify: the peer gets eof_received, then closes
        assert pair.sp.events == ["made", "data", "eof", ("lost", None)]
        assert pair.cp.events[0] == "made" and pair.cp.events[-1] == ("lost", None)
        assert pair.cp.data_types == pair.sp.data_types == {"bytes"}
    finally:
        await pair.aclose()


async def _close_notify_events(kind, sdir, who):
    sub = tempfile.mkdtemp(dir=sdir)
    pair = await open_pair(kind, sub, Factory(on_data=echo), **tls_kw())
    try:
        pair.ct.write(b"ping")
        await pair.cp.wait_data(4)
        t = pair.ct if who.startswith("client") else pair.st
        if who.endswith("close"):
            t.close()
        else:
            t.abort()
        await wait(pair.cp.lost)
        await wait(pair.sp.lost)
        await asyncio.sleep(0.01)
        return {"client": pair.cp.events, "server": pair.sp.events,
                "client_exc": exc_record(pair.cp.exc), "server_exc": exc_record(pair.sp.exc)}
    finally:
        await pair.aclose()


@pytest.mark.parametrize("who", ["client_close", "server_close", "client_abort",
                                 "server_abort"])
async def test_close_and_abort_events_same_as_stock(who, sdir):
    rec = await same_as_stock(_close_notify_events, "tcp4", sdir, who)
    closer, other = ("client", "server") if who.startswith("client") else ("server", "client")
    assert rec[closer][-1] == ("lost", None)
    assert rec[other][-1][0] == "lost"
    if who.endswith("close"):
        # a clean close (close_notify): the other side gets eof_received
        assert rec[other] == ["made", "data", "eof", ("lost", None)]


async def test_tls_extra_info(kind, sdir):
    cctx = tls.client_context(with_cert=True)
    sctx = tls.server_context(require_client_cert=True)
    pair = await open_pair(kind, sdir, **tls_kw(sctx, cctx))
    try:
        for t, ctx, peer_cn in ((pair.ct, cctx, "aioring test server"),
                                (pair.st, sctx, "aioring test client")):
            cert = t.get_extra_info("peercert")
            assert dict(x[0] for x in cert["subject"])["commonName"] == peer_cn
            assert t.get_extra_info("sslcontext") is ctx
            sslobj = t.get_extra_info("ssl_object")
            assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
            assert sslobj.getpeercert() == cert
            cipher = t.get_extra_info("cipher")
            assert isinstance(cipher, tuple) and len(cipher) == 3
            assert cipher == sslobj.cipher()
            assert t.get_extra_info("compression") is None
            sock = t.get_extra_info("socket")
            assert sock.type == socket.SOCK_STREAM
            assert sock.getpeername() == t.get_extra_info("peername")
            assert t.get_extra_info("no-such-key", 9) == 9
        assert pair.ct.get_extra_info("ssl_object").server_side is False
        assert pair.st.get_extra_info("ssl_object").server_side is True
        assert pair.ct.get_extra_info("ssl_object").server_hostname == HOST
    finally:
        await pair.aclose()


async def _transport_misuse(sdir):
    sub = tempfile.mkdtemp(dir=sdir)
    pair = await open_pair("tcp4", sub, Factory(on_data=echo), **tls_kw())
    rec = {}
    ct = pair.ct

    def attempt(name, fn, *args, **kw):
        try:
            rec[name] = ("ok", fn(*args, **kw))
        except Exception as exc:
            rec[name] = norm(exc)

    try:
        attempt("can_write_eof", ct.can_write_eof)
        attempt("write_eof", ct.write_eof)
        attempt("write_str", ct.write, "text")
        attempt("write_none", ct.write, None)
        attempt("write_empty", ct.write, b"")
        attempt("limits", ct.get_write_buffer_limits)
        attempt("limits_bad", ct.set_write_buffer_limits, high=1, low=2)
        attempt("set_limits", ct.set_write_buffer_limits, high=1000)
        attempt("limits_after", ct.get_write_buffer_limits)
        attempt("size", ct.get_write_buffer_size)
        attempt("is_reading", ct.is_reading)
        ct.pause_reading()
        attempt("is_reading_paused", ct.is_reading)
        ct.write(b"while paused")
        await pair.sp.wait_data(12)
        await asyncio.sleep(0.05)
        rec["data_while_paused"] = bytes(pair.cp.data)
        ct.resume_reading()
        await pair.cp.wait_data(12)
        rec["data_after_resume"] = bytes(pair.cp.data)
        ct.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
        await pair.cp.wait_data(15)
        rec["after_writelines"] = bytes(pair.cp.data)
        ct.close()
        attempt("write_after_close", ct.write, b"dropped")
        attempt("close_twice", ct.close)
        attempt("is_closing", ct.is_closing)
        await wait(pair.cp.lost)
        # (a write after connection_lost raises AttributeError on the stock
        # loop, its transport having dropped its protocol: not compared)
        rec["events"] = pair.cp.events
        rec["server_data"] = bytes(pair.sp.data)
    finally:
        await pair.aclose()
    return rec


async def test_transport_misuse_same_as_stock(sdir):
    rec = await same_as_stock(_transport_misuse, sdir)
    assert rec["can_write_eof"] == ("ok", False)
    assert rec["write_eof"][0] == "NotImplementedError"
    assert rec["write_str"][0] == "TypeError"
    assert rec["data_while_paused"] == b""
    assert rec["data_after_resume"] == b"while paused"
    assert rec["server_data"] == b"while pausedabc"


async def _writelines_not_bytes(sdir):
    # writelines() does not check its items: the stock SSL transport fails
    # when it encrypts a str, a fatal error for the connection.
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(
        (ctx["message"], norm(ctx.get("exception")))))
    pair = await open_pair("tcp4", tempfile.mkdtemp(dir=sdir), **tls_kw())
    try:
        try:
            pair.ct.writelines([b"ok", "text"])
            raised = None
        except Exception as exc:
            raised = norm(exc)
        await wait(pair.cp.lost)
        await wait(pair.sp.lost)
        return {"raised": raised, "client": pair.cp.events, "server": pair.sp.events,
                "server_data": bytes(pair.sp.data), "contexts": contexts}
    finally:
        loop.set_exception_handler(None)
        await pair.aclose()


async def test_writelines_not_bytes_same_as_stock(sdir):
    await same_as_stock(_writelines_not_bytes, sdir)


class BufRecorder(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(1000)
        self.got = bytearray()
        self.events = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, t):
        self.events.append("made")

    def get_buffer(self, sizehint):
        # a memoryview: the stock SSL protocol fills the buffer through
        # slices of it, and a slice of a bytearray would be a copy
        return memoryview(self.buf)

    def buffer_updated(self, n):
        if self.events[-1] != "data":
            self.events.append("data")
        self.got += self.buf[:n]

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        self.lost.set_result(exc)


async def test_buffered_protocol_over_tls(sdir):
    blob = os.urandom(MiB)

    def send_all(p, t):
        t.write(blob)
        t.close()

    pair = await open_pair("tcp4", sdir, Factory(on_made=send_all),
                           client_factory=BufRecorder, **tls_kw())
    try:
        await wait(pair.cp.lost, 30)
        assert sha(pair.cp.got) == sha(blob)
        assert pair.cp.events == ["made", "data", "eof", ("lost", None)]
    finally:
        await pair.aclose()


# -- streams: open_connection / start_server and the unix variants -------------------------


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
async def test_streams_over_tls(unix, sdir):
    handled = []

    async def handler(reader, writer):
        cert = writer.get_extra_info("peercert")
        handled.append(dict(x[0] for x in cert["subject"])["commonName"])
        while line := await reader.readline():
            writer.write(b"echo: " + line)
            await writer.drain()
        handled.append("eof")
        writer.close()
        await writer.wait_closed()

    sctx = tls.server_context(require_client_cert=True)
    cctx = tls.client_context(with_cert=True)
    if unix:
        path = os.path.join(sdir, "tls.sock")
        server = await asyncio.start_unix_server(handler, path, ssl=sctx)
        connect = asyncio.open_unix_connection(path, ssl=cctx, server_hostname=HOST)
    else:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        connect = asyncio.open_connection("127.0.0.1", port, ssl=cctx)
    try:
        reader, writer = await wait(connect)
        cert = writer.get_extra_info("peercert")
        assert dict(x[0] for x in cert["subject"])["commonName"] == "aioring test server"
        for i in range(3):
            writer.write(b"line %d\n" % i)
            await writer.drain()
            assert await wait(reader.readline()) == b"echo: line %d\n" % i
        assert writer.can_write_eof() is False
        writer.close()
        await wait(writer.wait_closed())
        await until(lambda: "eof" in handled)
        assert handled == ["aioring test client", "eof"]
    finally:
        server.close()
        await wait(server.wait_closed())


# -- start_tls ---------------------------------------------------------------------------------


async def test_start_tls_upgrades_a_plain_connection():
    loop = asyncio.get_running_loop()
    sctx, cctx = tls.server_context(), tls.client_context()
    upgraded = loop.create_future()

    class Server(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if data == b"STARTTLS\n" and not upgraded.done():
                self.transport.write(b"OK\n")
                upgraded.set_result(None)
                self.task = loop.create_task(
                    loop.start_tls(self.transport, self, sctx, server_side=True))

    sf = Factory(Server)
    server = await loop.create_server(sf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ct = tt = None
    try:
        ct, cp = await wait(loop.create_connection(Recorder, "127.0.0.1", port))
        ct.write(b"STARTTLS\n")
        await cp.wait_data(3)
        assert bytes(cp.data) == b"OK\n"
        tt = await wait(loop.start_tls(ct, cp, cctx, server_hostname=HOST))
        assert tt is not ct
        assert tt.get_protocol() is cp
        assert tt.get_extra_info("peercert") is not None
        assert tt.get_extra_info("sslcontext") is cctx
        assert not ct.is_closing()
        sp = await sf.next()
        stls = await wait(sp.task)
        assert stls.get_extra_info("ssl_object").server_side is True
        sp.data.clear()
        tt.write(b"secret\n")
        await until(lambda: bytes(sp.data) == b"secret\n")
        stls.write(b"tls echo: secret\n")
        await cp.wait_data(3 + 17)
        assert bytes(cp.data) == b"OK\ntls echo: secret\n"
        assert bytes(sp.data) == b"secret\n"
        tt.close()
        await wait(cp.lost)
        await wait(sp.lost)
        # connection_made is not called again for the upgrade
        assert cp.events == ["made", "data", ("lost", None)] or \
            cp.events == ["made", "data", "eof", ("lost", None)]
        assert sp.events == ["made", "data", "eof", ("lost", None)]
    finally:
        for t in (tt, ct):
            if t is not None and not t.is_closing():
                t.abort()
        server.close()


async def test_stream_writer_start_tls_both_sides():
    sctx, cctx = tls.server_context(), tls.client_context()
    seen = []

    async def handler(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(sctx)
        seen.append(writer.get_extra_info("ssl_object") is not None)
        line = await reader.readline()
        writer.write(b"over tls: " + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await wait(asyncio.open_connection("127.0.0.1", port))
        assert writer.get_extra_info("ssl_object") is None
        writer.write(b"STARTTLS\n")
        assert await wait(reader.readline()) == b"OK\n"
        await wait(writer.start_tls(cctx, server_hostname=HOST))
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        writer.write(b"hello\n")
        assert await wait(reader.readline()) == b"over tls: hello\n"
        assert await wait(reader.read()) == b""
        writer.close()
        await wait(writer.wait_closed())
        assert seen == [True]
    finally:
        server.close()


async def _start_tls_failures(sdir):
    loop = asyncio.get_running_loop()
    rec = {}
    sctx, cctx = tls.server_context(), tls.client_context()
    sf = Factory()
    server = await loop.create_server(sf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ct, cp = await wait(loop.create_connection(Recorder, "127.0.0.1", port))
        sp = await sf.next()
        for name, ctx in (("context_none", None), ("context_str", "ctx")):
            try:
                await wait(loop.start_tls(ct, cp, ctx))
                rec[name] = "ok"
            except Exception as exc:
                rec[name] = norm(exc)
        rec["plain_still_open"] = not ct.is_closing()
        # the peer never answers: the handshake timeout applies
        t0 = loop.time()
        try:
            await wait(loop.start_tls(ct, cp, cctx, server_hostname=HOST,
                                      ssl_handshake_timeout=0.3))
            rec["timeout"] = "ok"
        except Exception as exc:
            rec["timeout"] = norm(exc)
        rec["timeout_in_time"] = 0.25 <= loop.time() - t0 < 3
        rec["closed_after_failure"] = ct.is_closing()
        await wait(sp.lost)
        rec["server_events"] = sp.events
        rec["client_events"] = cp.events
        # a transport that cannot be upgraded (a datagram endpoint)
        dt, dp = await wait(loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)))
        try:
            await wait(loop.start_tls(dt, dp, cctx, server_hostname=HOST))
            rec["datagram"] = "ok"
        except Exception as exc:
            rec["datagram"] = norm(exc)
        finally:
            dt.close()
        # a certificate that does not match: SSLCertVerificationError, the
        # connection is closed
        ct2, cp2 = await wait(loop.create_connection(Recorder, "127.0.0.1", port))
        await until(lambda: len(sf.made) == 2)
        sp2 = sf.made[1]
        await wait(sp2.made)
        sp2.transport.pause_reading()       # the ClientHello waits for start_tls

        async def server_upgrade():
            return await loop.start_tls(sp2.transport, sp2, sctx, server_side=True)

        st = loop.create_task(server_upgrade())
        try:
            await wait(loop.start_tls(ct2, cp2, cctx, server_hostname="wrong.example"))
            rec["mismatch"] = "ok"
        except Exception as exc:
            rec["mismatch"] = norm(exc)
            rec["mismatch_verify"] = (getattr(exc, "verify_code", None),
                                      getattr(exc, "verify_message", None))
        rec["mismatch_closed"] = ct2.is_closing()
        try:
            await wait(st)
        except Exception as exc:
            rec["server_side_mismatch"] = type(exc).__name__
    finally:
        server.close()
    return rec


async def test_start_tls_failures_same_as_stock(sdir):
    rec = await same_as_stock(_start_tls_failures, sdir, timeout=30)
    assert rec["context_none"][0] == "TypeError"
    assert rec["plain_still_open"] is True
    assert rec["timeout_in_time"] is True
    assert rec["closed_after_failure"] is True
    assert rec["datagram"][0] == "TypeError"
    assert rec["mismatch"][0] == "SSLCertVerificationError"
    assert rec["mismatch_closed"] is True


# -- verification failures --------------------------------------------------------------------


async def _verification_failures(sdir):
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(
        (ctx["message"], norm(ctx.get("exception")))))
    sf = Factory()
    server = await loop.create_server(sf, "127.0.0.1", 0, ssl=tls.server_context())
    port = server.sockets[0].getsockname()[1]
    rec = {}
    no_hostname_check = tls.client_context()
    no_hostname_check.check_hostname = False
    cases = {
        "hostname_mismatch": dict(ssl=tls.client_context(), server_hostname="wrong.example"),
        "untrusted_default_context": dict(ssl=ssl.create_default_context(),
                                          server_hostname=HOST),
        "ssl_true": dict(ssl=True),
        "empty_server_hostname": dict(ssl=tls.client_context(), server_hostname=""),
        "empty_hostname_no_check": dict(ssl=no_hostname_check, server_hostname=""),
        "ip_address_hostname": dict(ssl=tls.client_context()),
        "localhost_hostname": dict(ssl=tls.client_context(), server_hostname=HOST),
    }
    try:
        for name, kw in cases.items():
            try:
                t, p = await wait(loop.create_connection(Recorder, "127.0.0.1", port, **kw))
            except Exception as exc:
                rec[name] = norm(exc)
                rec[name + "_verify"] = (getattr(exc, "verify_code", None),
                                         getattr(exc, "verify_message", None))
            else:
                rec[name] = "ok"
                t.close()
                await wait(p.lost)
        await asyncio.sleep(0.1)
        rec["server_protocols"] = [p.events for p in sf.made]
        rec["contexts"] = contexts
    finally:
        loop.set_exception_handler(None)
        server.close()
    return rec


async def test_verification_failures_same_as_stock(sdir):
    rec = await same_as_stock(_verification_failures, sdir)
    assert rec["hostname_mismatch"][0] == "SSLCertVerificationError"
    assert "Hostname mismatch" in rec["hostname_mismatch_verify"][1]
    assert rec["untrusted_default_context"][0] == "SSLCertVerificationError"
    assert rec["ssl_true"][0] == "SSLCertVerificationError"
    assert rec["ip_address_hostname"] == "ok"
    assert rec["localhost_hostname"] == "ok"
    assert rec["empty_hostname_no_check"] == "ok"


async def _plaintext_client_to_tls_server():
    # A client that speaks plain text to a TLS server: the handshake fails
    # on the server, which closes the connection; the app protocol never
    # hears of it.
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx["message"]))
    sf = Factory()
    server = await loop.create_server(sf, "127.0.0.1", 0, ssl=tls.server_context())
    port = server.sockets[0].getsockname()[1]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, b"GET / HTTP/1.0\r\n\r\n")
        got = b""
        try:
            while True:
                chunk = await wait(loop.sock_recv(sock, 65536))
                if not chunk:
                    break
                got += chunk
            end = "eof"
        except ConnectionResetError:
            end = "reset"
        await asyncio.sleep(0.05)
        return {"end": end, "got_bytes": bool(got),
                "server_protocols": [p.events for p in sf.made], "contexts": contexts}
    finally:
        loop.set_exception_handler(None)
        sock.close()
        server.close()


async def test_plaintext_client_to_tls_server_same_as_stock():
    rec = await same_as_stock(_plaintext_client_to_tls_server)
    assert rec["server_protocols"] in ([], [[]])


# -- timeouts -----------------------------------------------------------------------------------


async def _handshake_timeouts():
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx["message"]))
    rec = {}
    # client side: a server that accepts TCP and never says anything
    mute = socket.create_server(("127.0.0.1", 0))
    try:
        t0 = loop.time()
        try:
            await wait(loop.create_connection(
                Recorder, *mute.getsockname(), ssl=tls.client_context(),
                server_hostname=HOST, ssl_handshake_timeout=0.3))
            rec["client"] = "ok"
        except Exception as exc:
            rec["client"] = norm(exc)
        rec["client_in_time"] = 0.25 <= loop.time() - t0 < 3
        t0 = loop.time()
        try:
            await wait(asyncio.open_connection(
                *mute.getsockname(), ssl=tls.client_context(), server_hostname=HOST,
                ssl_handshake_timeout=0.3))
            rec["streams"] = "ok"
        except Exception as exc:
            rec["streams"] = norm(exc)
        rec["streams_in_time"] = 0.25 <= loop.time() - t0 < 3
    finally:
        mute.close()
    # server side: a client that connects and never starts the handshake
    sf = Factory()
    server = await loop.create_server(sf, "127.0.0.1", 0, ssl=tls.server_context(),
                                      ssl_handshake_timeout=0.3)
    sock = socket.create_connection(server.sockets[0].getsockname())
    sock.setblocking(False)
    try:
        t0 = loop.time()
        try:
            chunk = await wait(loop.sock_recv(sock, 100))
            rec["server_side_client_sees"] = ("data", bool(chunk))
        except ConnectionResetError:
            rec["server_side_client_sees"] = "reset"
        rec["server_in_time"] = 0.25 <= loop.time() - t0 < 3
        await asyncio.sleep(0.05)
        rec["server_protocols"] = [p.events for p in sf.made]
    finally:
        sock.close()
        server.close()
        loop.set_exception_handler(None)
    rec["contexts"] = contexts
    return rec


@pytest.mark.timeout(60)
async def test_ssl_handshake_timeout_same_as_stock():
    rec = await same_as_stock(_handshake_timeouts)
    assert rec["client"][0] in ("ConnectionAbortedError", "TimeoutError")
    assert rec["client_in_time"] and rec["streams_in_time"] and rec["server_in_time"]
    assert rec["server_side_client_sees"] in (("data", False), "reset")


async def _shutdown_timeout():
    # We close; the peer completed the handshake but never reads again, so
    # our close_notify is never answered: after ssl_shutdown_timeout the
    # connection is dropped and connection_lost gets the timeout.
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx["message"]))
    peer = ThreadPeer(lambda self, s: self.release.wait(10))
    try:
        t, p = await wait(loop.create_connection(
            Recorder, *peer.addr, ssl=tls.client_context(), server_hostname=HOST,
            ssl_shutdown_timeout=0.3))
        t.write(b"unread")
        await asyncio.sleep(0.05)
        t0 = loop.time()
        t.close()
        exc = await wait(p.lost)
        return {"exc": norm(exc), "in_time": 0.25 <= loop.time() - t0 < 3,
                "events": p.events, "contexts": contexts}
    finally:
        loop.set_exception_handler(None)
        peer.close()


@pytest.mark.timeout(60)
async def test_ssl_shutdown_timeout_same_as_stock():
    rec = await same_as_stock(_shutdown_timeout)
    assert rec["in_time"] is True
    assert rec["events"][0] == "made" and rec["events"][-1][0] == "lost"


async def _peer_close_variants(how):
    # What our side sees when the peer (a plain ssl socket) ends the
    # connection in various ways after sending some data.
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx["message"]))

    def then(self, s):
        s.sendall(b"from the peer")
        if how == "close_notify_and_wait":
            try:
                s.unwrap()              # sends close_notify, waits for ours
            except OSError:
                pass
            self.release.wait(10)
        elif how == "close_without_close_notify":
            s.close()                   # Python sends no close_notify on close()
        elif how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            s.close()

    peer = ThreadPeer(then)
    try:
        t, p = await wait(loop.create_connection(
            functools.partial(Recorder, eof_result=True), *peer.addr,
            ssl=tls.client_context(), server_hostname=HOST))
        exc = await wait(p.lost)
        return {"events": p.events, "data": bytes(p.data), "exc": norm(exc),
                "contexts": contexts}
    finally:
        loop.set_exception_handler(None)
        peer.close()


@pytest.mark.parametrize("how", ["close_notify_and_wait", "close_without_close_notify",
                                 "reset"])
async def test_peer_close_variants_same_as_stock(how):
    rec = await same_as_stock(_peer_close_variants, how)
    assert rec["events"][0] == "made"
    if how != "reset":
        # eof_received returned True: with TLS that does not keep it open
        assert rec["events"] == ["made", "data", "eof", ("lost", None)]
        assert rec["data"] == b"from the peer"


# -- bad arguments ------------------------------------------------------------------------------


async def _bad_arguments(sdir):
    loop = asyncio.get_running_loop()
    sub = tempfile.mkdtemp(dir=sdir)
    plain = await loop.create_server(Recorder, "127.0.0.1", 0)
    port = plain.sockets[0].getsockname()[1]
    tlsserver = await loop.create_server(Recorder, "127.0.0.1", 0, ssl=tls.server_context())
    tport = tlsserver.sockets[0].getsockname()[1]
    upath = os.path.join(sub, "u.sock")
    userver = await loop.create_unix_server(Recorder, upath)
    cctx = tls.client_context()
    rec = {}
    opened = []

    def connected_sock():
        s = socket.create_connection(("127.0.0.1", port))
        opened.append(s)
        return s

    cases = {
        "conn_handshake_timeout_no_ssl": lambda: loop.create_connection(
            Recorder, "127.0.0.1", port, ssl_handshake_timeout=1),
        "conn_shutdown_timeout_no_ssl": lambda: loop.create_connection(
            Recorder, "127.0.0.1", port, ssl_shutdown_timeout=1),
        "conn_server_hostname_no_ssl": lambda: loop.create_connection(
            Recorder, "127.0.0.1", port, server_hostname=HOST),
        "conn_sock_ssl_no_hostname": lambda: loop.create_connection(
            Recorder, sock=connected_sock(), ssl=cctx),
        "conn_handshake_timeout_zero": lambda: loop.create_connection(
            Recorder, "127.0.0.1", tport, ssl=cctx, ssl_handshake_timeout=0),
        "conn_handshake_timeout_negative": lambda: loop.create_connection(
            Recorder, "127.0.0.1", tport, ssl=cctx, ssl_handshake_timeout=-1),
        "conn_shutdown_timeout_zero": lambda: loop.create_connection(
            Recorder, "127.0.0.1", tport, ssl=cctx, ssl_shutdown_timeout=0),
        "conn_ssl_not_a_context": lambda: loop.create_connection(
            Recorder, "127.0.0.1", tport, ssl="yes"),
        "server_ssl_true": lambda: loop.create_server(Recorder, "127.0.0.1", 0, ssl=True),
        "server_handshake_timeout_no_ssl": lambda: loop.create_server(
            Recorder, "127.0.0.1", 0, ssl_handshake_timeout=1),
        "server_shutdown_timeout_no_ssl": lambda: loop.create_server(
            Recorder, "127.0.0.1", 0, ssl_shutdown_timeout=1),
        "unix_conn_ssl_no_hostname": lambda: loop.create_unix_connection(
            Recorder, upath, ssl=cctx),
        "unix_conn_handshake_timeout_no_ssl": lambda: loop.create_unix_connection(
            Recorder, upath, ssl_handshake_timeout=1),
        "unix_conn_server_hostname_no_ssl": lambda: loop.create_unix_connection(
            Recorder, upath, server_hostname=HOST),
        "unix_server_handshake_timeout_no_ssl": lambda: loop.create_unix_server(
            Recorder, os.path.join(sub, "u2.sock"), ssl_handshake_timeout=1),
        "unix_server_shutdown_timeout_no_ssl": lambda: loop.create_unix_server(
            Recorder, os.path.join(sub, "u3.sock"), ssl_shutdown_timeout=1),
        "open_connection_handshake_timeout_no_ssl": lambda: asyncio.open_connection(
            "127.0.0.1", port, ssl_handshake_timeout=1),
        "start_server_handshake_timeout_no_ssl": lambda: asyncio.start_server(
            lambda r, w: None, "127.0.0.1", 0, ssl_handshake_timeout=1),
        "accepted_handshake_timeout_no_ssl": lambda: loop.connect_accepted_socket(
            Recorder, connected_sock(), ssl_handshake_timeout=1),
    }
    try:
        for name, make in cases.items():
            try:
                res = await wait(make())
            except Exception as exc:
                rec[name] = norm(exc, sub)
            else:
                rec[name] = "ok"
                if isinstance(res, tuple):
                    res[0].close() if hasattr(res[0], "close") else res[1].close()
                else:
                    res.close()
    finally:
        for s in opened:
            s.close()
        for srv in (plain, tlsserver, userver):
            srv.close()
    return rec


async def test_bad_arguments_same_as_stock(sdir):
    rec = await same_as_stock(_bad_arguments, sdir)
    for k in ("conn_handshake_timeout_no_ssl", "conn_shutdown_timeout_no_ssl",
              "conn_server_hostname_no_ssl", "conn_sock_ssl_no_hostname",
              "conn_handshake_timeout_zero", "conn_shutdown_timeout_zero",
              "server_handshake_timeout_no_ssl", "server_shutdown_timeout_no_ssl",
              "unix_conn_ssl_no_hostname", "unix_conn_handshake_timeout_no_ssl",
              "unix_conn_server_hostname_no_ssl", "unix_server_handshake_timeout_no_ssl",
              "open_connection_handshake_timeout_no_ssl",
              "start_server_handshake_timeout_no_ssl",
              "accepted_handshake_timeout_no_ssl"):
        assert rec[k][0] == "ValueError", k
    assert rec["server_ssl_true"][0] == "TypeError"
    assert rec["conn_server_hostname_no_ssl"][2] == \
        "server_hostname is only meaningful with ssl"


# -- a large transfer with flow control ----------------------------------------------------------


@pytest.mark.timeout(240)
async def test_tls_echo_64_mib_both_directions():
    n = 64 * MiB
    blob = os.urandom(n)
    server_bytes = [0]

    async def handler(reader, writer):
        while data := await reader.read(256 * 1024):
            server_bytes[0] += len(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls.server_context())
    port = server.sockets[0].getsockname()[1]
    writer = None
    try:
        reader, writer = await wait(asyncio.open_connection(
            "127.0.0.1", port, ssl=tls.client_context()))
        paused = []
        transport = writer.transport
        proto = transport.get_protocol()
        orig_pause = proto.pause_writing

        def pause_writing():
            paused.append(transport.get_write_buffer_size())
            orig_pause()

        proto.pause_writing = pause_writing

        async def send():
            view = memoryview(blob)
            for i in range(0, n, 256 * 1024):
                writer.write(view[i:i + 256 * 1024])
                await writer.drain()

        async def receive():
            h = hashlib.sha256()
            total = 0
            while total < n:
                chunk = await reader.read(MiB)
                if not chunk:
                    break
                total += len(chunk)
                h.update(chunk)
            return total, h.hexdigest()

        _, (total, digest) = await wait(asyncio.gather(send(), receive()), 200)
        assert total == n
        assert digest == hashlib.sha256(blob).hexdigest()
        assert server_bytes[0] == n
        # flow control was exercised: the client's writes were paused
        assert paused, "pause_writing was never called"
        writer.close()
        await wait(writer.wait_closed())
    finally:
        if writer is not None and not writer.transport.is_closing():
            writer.transport.abort()
        server.close()


# -- the per-record path (aioring compiles it: tls.pxi) -----------------------------------


async def test_burst_of_small_records_all_delivered():
    # a peer writes 300 small records at once and then waits: they reach
    # the loop in a few reads, several records per read, and every one
    # must be delivered without more bytes arriving to prompt it
    n, size = 300, 37
    got = {}

    def peer(tp, s):
        for i in range(n):
            s.sendall(bytes([i % 256]) * size)
        buf = bytearray()
        while len(buf) < n * size:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        got["echo"] = bytes(buf)
        tp.release.wait(10)

    tp = ThreadPeer(peer)
    try:
        t, p = await asyncio.get_running_loop().create_connection(
            functools.partial(Recorder, on_data=echo), *tp.addr,
            ssl=tls.client_context(), server_hostname=HOST)
        await p.wait_data(n * size, 20)
        await until(lambda: "echo" in got, 20)
        expected = b"".join(bytes([i % 256]) * size for i in range(n))
        assert bytes(p.data) == expected
        assert got["echo"] == expected
        tp.release.set()        # the peer closes its end
        t.close()
        await wait(p.lost)
    finally:
        tp.close()


class CountingSSLObject(ssl.SSLObject):
    """An SSLObject class of the user's: its methods are the ones used."""
    calls = {"read": 0, "write": 0}

    def read(self, *args):
        CountingSSLObject.calls["read"] += 1
        return super().read(*args)

    def write(self, data):
        CountingSSLObject.calls["write"] += 1
        return super().write(data)


async def _custom_sslobject_class(sdir):
    CountingSSLObject.calls.update(read=0, write=0)
    cctx = tls.client_context()
    cctx.sslobject_class = CountingSSLObject
    pair = await open_pair("tcp4", sdir, Factory(on_data=echo),
                           **tls_kw(client_ctx=cctx))
    try:
        pair.ct.write(b"x" * 5000)
        await pair.cp.wait_data(5000)
        rec = {"data": bytes(pair.cp.data) == b"x" * 5000,
               "type": type(pair.ct.get_extra_info("ssl_object")).__name__,
               "read_used": CountingSSLObject.calls["read"] > 0,
               "write_used": CountingSSLObject.calls["write"] > 0}
        pair.ct.close()
        await wait(pair.cp.lost)
        rec["events"] = pair.cp.events
    finally:
        await pair.aclose()
    return rec


async def test_custom_sslobject_class_same_as_stock(sdir):
    rec = await same_as_stock(_custom_sslobject_class, sdir)
    assert rec["type"] == "CountingSSLObject"
    assert rec["data"] and rec["read_used"] and rec["write_used"]


async def _write_flow_control(sdir, high, low):
    # the application writes past its (odd) limits while the peer does not
    # read; then the peer reads everything
    sub = tempfile.mkdtemp(dir=sdir)
    pair = await open_pair("tcp4", sub, **tls_kw())
    rec = {}
    try:
        pair.st.pause_reading()
        pair.ct.set_write_buffer_limits(high=high, low=low)
        rec["limits"] = pair.ct.get_write_buffer_limits()
        total = 0
        for _ in range(400):
            pair.ct.write(b"y" * 65536)
            total += 65536
            if "pause_writing" in pair.cp.events:
                break
            await asyncio.sleep(0)
        rec["paused"] = "pause_writing" in pair.cp.events
        rec["size_positive"] = pair.ct.get_write_buffer_size() > 0
        pair.st.resume_reading()
        await pair.sp.wait_data(total, 30)
        await until(lambda: "resume_writing" in pair.cp.events, 10)
        rec["events"] = list(pair.cp.events)
        rec["size_after"] = pair.ct.get_write_buffer_size()
        rec["received"] = bytes(pair.sp.data) == b"y" * total
    finally:
        await pair.aclose()
    return rec


@pytest.mark.parametrize("high,low", [(100_000, 10_000), (70000.5, 1000.25)],
                         ids=["ints", "floats"])
async def test_write_flow_control_same_as_stock(sdir, high, low):
    rec = await same_as_stock(_write_flow_control, sdir, high, low, timeout=60)
    assert rec["paused"] and rec["received"]
    assert rec["events"] == ["made", "pause_writing", "resume_writing"]
    assert rec["size_after"] == 0


async def test_tls_protocol_is_aiorings_compiled_one(sdir):
    # what the tests above exercise on aioring is its own per-record path
    pair = await open_pair("tcp4", sdir, **tls_kw())
    try:
        protocol = pair.ct._ssl_protocol
        if type(asyncio.get_running_loop()).__module__.startswith("aioring"):
            assert type(protocol).__module__ == "aioring.loop"
            assert type(protocol).__name__ == "SSLProtocol"
            assert type(pair.ct).__name__ == "_SSLProtocolTransport"
            assert isinstance(protocol, asyncio.sslproto.SSLProtocol)
        assert isinstance(pair.ct, asyncio.sslproto._SSLProtocolTransport)
    finally:
        await pair.aclose()
