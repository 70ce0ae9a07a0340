"""Servers and connections: create_server, create_connection, the Unix
variants, connect_accepted_socket, asyncio's streams on top, and the errors
for misuse.  Parity with the stock loop: what the program and the peer
observe.  Version-dependent behaviour (wait_closed, all_errors, Unix socket
cleanup, keep_alive, close_clients) is compared with a run on a fresh stock
loop in a worker thread (`same_as_stock`) or guarded by the running
Python's version, as the stock loop itself is.
"""
import asyncio
import errno
import os
import pathlib
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from _stream_helpers import (
    HAS_IPV6, Factory, Recorder, exc_record, needs_ipv6, on_stock_thread,
    same_as_stock, wait)
from _loop_helpers import LOOP_FACTORIES, on_stock

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


def echo(p, data):
    p.transport.write(data)


def free_port(host="127.0.0.1", family=socket.AF_INET):
    """A port nobody listens on (bound then closed)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def echo_once(addr, family=socket.AF_INET, payload=b"ping"):
    loop = asyncio.get_running_loop()
    t, p = await asyncio.wait_for(
        loop.create_connection(Recorder, addr[0], addr[1], family=family), 10)
    try:
        t.write(payload)
        await p.wait_data(len(payload))
        return bytes(p.data)
    finally:
        t.close()
        await wait(p.lost)


async def refused(host, port):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except OSError as exc:
        return type(exc).__name__
    w.close()
    return "connected"


def labelled(text, labels):
    """Replace ports/paths in `text` by stable labels, for comparing runs."""
    for value, label in labels.items():
        text = re.sub(r"(?<![\d])" + re.escape(str(value)) + r"(?![\d])", label, text)
    return text


# -- create_server ------------------------------------------------------------------

async def test_create_server_several_hosts():
    loop = asyncio.get_running_loop()
    hosts = ["127.0.0.1"] + (["::1"] if HAS_IPV6 else [])
    srv = await loop.create_server(Factory(on_data=echo), hosts, 0)
    try:
        socks = srv.sockets
        assert isinstance(socks, tuple)
        assert sorted(s.family for s in socks) == sorted(
            [socket.AF_INET] + ([socket.AF_INET6] if HAS_IPV6 else []))
        for s in socks:
            addr = s.getsockname()
            assert await echo_once(addr[:2], s.family) == b"ping"
            if s.family == socket.AF_INET6:
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        srv.close()
        await srv.wait_closed()
    # the same address twice: bound once
    srv = await loop.create_server(Factory(), ["127.0.0.1", "127.0.0.1"], 0)
    try:
        assert len(srv.sockets) == 1
    finally:
        srv.close()
        await srv.wait_closed()


async def _server_all_interfaces(host):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Factory(), host, 0)
    try:
        rec = []
        for s in srv.sockets:
            v6only = (s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                      if s.family == socket.AF_INET6 else None)
            rec.append((int(s.family), s.getsockname()[0], v6only, s.type == socket.SOCK_STREAM))
        return sorted(rec)
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize("host", [None, ""])
async def test_create_server_all_interfaces(host):
    await same_as_stock(_server_all_interfaces, host)


async def test_create_server_sock():
    loop = asyncio.get_running_loop()
    s = socket.socket()             # blocking, bound, not listening
    s.bind(("127.0.0.1", 0))
    srv = await loop.create_server(Factory(on_data=echo), sock=s)
    try:
        assert s.getblocking() is False
        assert len(srv.sockets) == 1
        assert srv.sockets[0].getsockname() == s.getsockname()
        assert srv.sockets[0].fileno() == s.fileno()
        assert await echo_once(s.getsockname()) == b"ping"
    finally:
        srv.close()
        await srv.wait_closed()
    assert s.fileno() == -1         # closing the server closed the socket


async def test_create_server_reuse_address_and_port():
    loop = asyncio.get_running_loop()
    servers = []
    try:
        srv = await loop.create_server(Factory(), "127.0.0.1", 0)
        servers.append(srv)
        ls = srv.sockets[0]
        assert ls.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        assert ls.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        srv = await loop.create_server(Factory(), "127.0.0.1", 0, reuse_address=False)
        servers.append(srv)
        assert srv.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0

        a = await loop.create_server(Factory(on_data=echo), "127.0.0.1", 0, reuse_port=True)
        servers.append(a)
        port = a.sockets[0].getsockname()[1]
        assert a.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        b = await loop.create_server(Factory(on_data=echo), "127.0.0.1", port, reuse_port=True)
        servers.append(b)
        assert b.sockets[0].getsockname()[1] == port
        for _ in range(4):
            assert await echo_once(("127.0.0.1", port)) == b"ping"
        with pytest.raises(OSError) as ei:
            await loop.create_server(Factory(), "127.0.0.1", port)
        assert ei.value.errno == errno.EADDRINUSE
    finally:
        for srv in servers:
            srv.close()
            await srv.wait_closed()


async def _bind_in_use():
    loop = asyncio.get_running_loop()
    a = await loop.create_server(Factory(), "127.0.0.1", 0)
    port = a.sockets[0].getsockname()[1]
    try:
        await loop.create_server(Factory(), "127.0.0.1", port)
    except OSError as exc:
        return exc_record(exc, port)
    finally:
        a.close()
        await a.wait_closed()


async def test_create_server_address_in_use_same_as_stock():
    rec = await same_as_stock(_bind_in_use)
    assert rec[0] == "OSError" and rec[1] == errno.EADDRINUSE


def listen_backlog(port):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                         text=True, timeout=10).stdout.split()
    return int(out[2]) if out else None       # Send-Q of a listener: its backlog


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss(8)")
async def test_create_server_backlog():
    loop = asyncio.get_running_loop()
    for kw, want in (({}, 100), ({"backlog": 7}, 7)):
        srv = await loop.create_server(Factory(), "127.0.0.1", 0, **kw)
        try:
            assert listen_backlog(srv.sockets[0].getsockname()[1]) == want
        finally:
            srv.close()
            await srv.wait_closed()


async def test_create_server_start_serving_false():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Factory(on_data=echo), "127.0.0.1", 0, start_serving=False)
    try:
        addr = srv.sockets[0].getsockname()
        assert srv.is_serving() is False
        # not listening until start_serving()
        assert await refused(*addr) == "ConnectionRefusedError"
        await srv.start_serving()
        assert srv.is_serving() is True
        await srv.start_serving()       # again: no error
        assert await echo_once(addr) == b"ping"
    finally:
        srv.close()
        await srv.wait_closed()
    assert srv.is_serving() is False


async def test_serve_forever_cancelled():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Factory(on_data=echo), "127.0.0.1", 0, start_serving=False)
    addr = srv.sockets[0].getsockname()
    task = asyncio.create_task(srv.serve_forever())
    await asyncio.sleep(0.01)
    assert srv.is_serving() is True
    assert await echo_once(addr) == b"ping"
    with pytest.raises(RuntimeError, match="already being awaited"):
        await srv.serve_forever()
    await asyncio.sleep(0.01)      # let the server side of the echo close
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert srv.is_serving() is False
    assert srv.sockets == ()
    assert await refused(*addr) == "ConnectionRefusedError"
    with pytest.raises(RuntimeError, match="is closed"):
        await srv.serve_forever()
    await asyncio.wait_for(srv.wait_closed(), 5)


async def _close_with_active_connection():
    loop = asyncio.get_running_loop()
    sf = Factory(on_data=echo)
    srv = await loop.create_server(sf, "127.0.0.1", 0)
    addr = srv.sockets[0].getsockname()
    rec = {}
    r, w = await asyncio.wait_for(asyncio.open_connection(*addr), 5)
    sp = await sf.next()
    await wait(sp.made)
    srv.close()
    rec["is_serving"] = srv.is_serving()
    rec["sockets"] = srv.sockets
    rec["new_connection"] = await refused(*addr)
    # the existing connection keeps working
    w.write(b"still here")
    rec["echo"] = await asyncio.wait_for(r.readexactly(10), 5)
    wc = asyncio.ensure_future(srv.wait_closed())
    await asyncio.sleep(0.05)
    rec["wait_closed_done_early"] = wc.done()
    w.close()
    await asyncio.wait_for(w.wait_closed(), 5)
    await asyncio.wait_for(wc, 5)
    rec["server_side"] = sp.events
    srv.close()                 # twice: no error
    await asyncio.wait_for(srv.wait_closed(), 5)
    return rec


async def test_server_close_wait_closed_same_as_stock():
    rec = await same_as_stock(_close_with_active_connection)
    assert rec["is_serving"] is False and rec["sockets"] == ()
    assert rec["echo"] == b"still here"
    assert rec["wait_closed_done_early"] is (not PY312)


async def test_server_async_context_manager():
    loop = asyncio.get_running_loop()
    async with await loop.create_server(Factory(on_data=echo), "127.0.0.1", 0) as srv:
        addr = srv.sockets[0].getsockname()
        assert srv.is_serving()
        assert srv.get_loop() is loop
        assert await echo_once(addr) == b"ping"
        await asyncio.sleep(0.01)
    assert srv.is_serving() is False
    assert srv.sockets == ()
    assert await refused(*addr) == "ConnectionRefusedError"


async def _close_or_abort_clients(which):
    loop = asyncio.get_running_loop()
    sf = Factory()
    srv = await loop.create_server(sf, "127.0.0.1", 0)
    addr = srv.sockets[0].getsockname()
    clients = []
    for _ in range(3):
        clients.append(await loop.create_connection(Recorder, *addr))
    while len(sf.made) < 3:
        await asyncio.sleep(0.005)
    # one server-side transport with queued data, one client with unread data
    sf.made[0].transport.write(b"x" * 10_000)
    srv.close()
    getattr(srv, which)()
    await asyncio.wait_for(srv.wait_closed(), 5)
    for t, p in clients:
        await wait(p.lost)
    return {"client": sorted(str(p.events) for t, p in clients),
            "server": sorted(str(p.events) for p in sf.made)}


@pytest.mark.skipif(not hasattr(asyncio.Server, "close_clients"),
                    reason="Server.close_clients/abort_clients are 3.13+")
@pytest.mark.parametrize("which", ["close_clients", "abort_clients"])
async def test_server_close_clients_abort_clients(which):
    await same_as_stock(_close_or_abort_clients, which)


async def test_create_server_keep_alive():
    loop = asyncio.get_running_loop()
    if not PY313:
        # no such parameter before 3.13, on either loop
        with pytest.raises(TypeError):
            await loop.create_server(Factory(), "127.0.0.1", 0, keep_alive=True)
        return
    for keep in (True, False):
        sf = Factory()
        srv = await loop.create_server(sf, "127.0.0.1", 0, keep_alive=keep)
        try:
            ls = srv.sockets[0]
            assert bool(ls.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is keep
            t, p = await loop.create_connection(Recorder, *ls.getsockname())
            sp = await sf.next()
            st = await wait(sp.made)
            s = st.get_extra_info("socket")
            assert bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is keep
            t.close()
            await wait(p.lost)
        finally:
            srv.close()
            await srv.wait_closed()


# -- create_connection --------------------------------------------------------------

@pytest.fixture
async def echo_server():
    loop = asyncio.get_running_loop()
    sf = Factory(on_data=echo)
    srv = await loop.create_server(sf, "127.0.0.1", 0)
    srv.factory = sf
    srv.addr = srv.sockets[0].getsockname()
    try:
        yield srv
    finally:
        srv.close()
        for p in sf.made:
            if p.transport and not p.transport.is_closing():
                p.transport.abort()
        await srv.wait_closed()


@pytest.mark.parametrize("blocking", [True, False])
async def test_create_connection_sock(echo_server, blocking):
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.connect(echo_server.addr)
    s.setblocking(blocking)
    t, p = await loop.create_connection(Recorder, sock=s)
    assert s.getblocking() is False
    assert t.get_extra_info("socket").fileno() == s.fileno()
    assert t.get_extra_info("peername") == echo_server.addr
    t.write(b"hello")
    await p.wait_data(5)
    assert bytes(p.data) == b"hello"
    t.close()
    await wait(p.lost)
    assert s.fileno() == -1


async def test_create_connection_local_addr(echo_server):
    loop = asyncio.get_running_loop()
    lport = free_port()
    t, p = await loop.create_connection(
        Recorder, *echo_server.addr, local_addr=("127.0.0.1", lport))
    try:
        assert t.get_extra_info("sockname") == ("127.0.0.1", lport)
    finally:
        t.close()
        await wait(p.lost)
    t, p = await loop.create_connection(
        Recorder, *echo_server.addr, local_addr=("127.0.0.1", 0))
    try:
        assert t.get_extra_info("sockname")[0] == "127.0.0.1"
    finally:
        t.close()
        await wait(p.lost)


async def test_create_connection_family_and_localhost(echo_server):
    loop = asyncio.get_running_loop()
    port = echo_server.addr[1]
    t, p = await loop.create_connection(Recorder, "localhost", port, family=socket.AF_INET)
    try:
        assert t.get_extra_info("peername") == ("127.0.0.1", port)
        assert t.get_extra_info("socket").family == socket.AF_INET
    finally:
        t.close()
        await wait(p.lost)
    # 'localhost' with happy eyeballs and interleave
    t, p = await loop.create_connection(Recorder, "localhost", port,
                                        happy_eyeballs_delay=0.05, interleave=1)
    try:
        assert t.get_extra_info("peername")[1] == port
        t.write(b"hi")
        await p.wait_data(2)
    finally:
        t.close()
        await wait(p.lost)


@needs_ipv6
async def test_create_connection_ipv6():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Factory(on_data=echo), "::1", 0)
    try:
        port = srv.sockets[0].getsockname()[1]
        t, p = await loop.create_connection(Recorder, "::1", port, family=socket.AF_INET6)
        try:
            assert t.get_extra_info("peername")[:2] == ("::1", port)
            t.write(b"v6")
            await p.wait_data(2)
        finally:
            t.close()
            await wait(p.lost)
    finally:
        srv.close()
        await srv.wait_closed()


def fake_resolver(loop, table):
    """Make `multi.test` resolve to `table` (a multi-address host) on this
    loop; other names resolve as usual."""
    orig = loop.getaddrinfo

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if host == "multi.test":
            return [i for i in table if family in (0, i[0])]
        return await orig(host, port, family=family, type=type, proto=proto, flags=flags)

    loop.getaddrinfo = getaddrinfo


def info(family, host, port):
    sa = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sa)


async def test_happy_eyeballs_skips_a_stalled_address(echo_server):
    loop = asyncio.get_running_loop()
    # a listener whose accept queue is full: further SYNs are dropped, so a
    # connect to it stays pending
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(0)
    filler = socket.create_connection(stalled.getsockname(), timeout=5)
    good = echo_server.addr
    fake_resolver(loop, [info(socket.AF_INET, "127.0.0.1", stalled.getsockname()[1]),
                         info(socket.AF_INET, "127.0.0.1", good[1])])
    try:
        t0 = loop.time()
        t, p = await asyncio.wait_for(
            loop.create_connection(Recorder, "multi.test", 80, happy_eyeballs_delay=0.1), 5)
        elapsed = loop.time() - t0
        try:
            assert t.get_extra_info("peername") == good
            assert 0.09 <= elapsed < 0.9
        finally:
            t.close()
            await wait(p.lost)
        # without happy eyeballs the first (stalled) address is tried alone
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.create_connection(Recorder, "multi.test", 80), 0.3)
    finally:
        del loop.getaddrinfo
        filler.close()
        stalled.close()


async def _all_refused(kwargs):
    loop = asyncio.get_running_loop()
    ports = [free_port() for _ in range(4)]
    if HAS_IPV6:
        fams = [(socket.AF_INET6, "::1"), (socket.AF_INET6, "::1"),
                (socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "127.0.0.1")]
    else:
        fams = [(socket.AF_INET, "127.0.0.1")] * 4
    fake_resolver(loop, [info(f, h, p) for (f, h), p in zip(fams, ports)])
    labels = {p: f"p{i}" for i, p in enumerate(ports)}
    try:
        await loop.create_connection(Recorder, "multi.test", 80, **kwargs)
    except BaseException as exc:
        rec = [type(exc).__name__, labelled(str(exc), labels)]
        if isinstance(exc, BaseExceptionGroup):
            rec.append([labelled(str(e), labels) + ":" + type(e).__name__
                        for e in exc.exceptions])
        return rec
    finally:
        del loop.getaddrinfo
    return "connected"


# The errors are listed in the order the attempts end.  A refused connect on
# loopback ends at once and the next attempt starts then, but one that takes
# longer than happy_eyeballs_delay (a busy 2-CPU machine) lets the next
# start beside it, and the order becomes a race: hence a delay (1 s) that
# no refused connect takes.
@pytest.mark.parametrize("kwargs", [
    {}, {"interleave": 1}, {"happy_eyeballs_delay": 1.0},
    {"happy_eyeballs_delay": 1.0, "interleave": 2},
    {"all_errors": True}, {"all_errors": True, "happy_eyeballs_delay": 1.0},
], ids=["plain", "interleave", "happy", "happy-interleave2", "all_errors", "all_errors-happy"])
async def test_create_connection_all_refused_same_as_stock(kwargs):
    rec = await same_as_stock(_all_refused, kwargs)
    if "all_errors" in kwargs:
        if PY312:
            assert rec[0] == "ExceptionGroup"
            assert all(e.endswith("ConnectionRefusedError") for e in rec[2])
        else:
            assert rec[0] == "TypeError"
    else:
        assert rec[0] == "OSError" and rec[1].startswith("Multiple exceptions")
    if kwargs.get("interleave") == 1 or ("happy_eyeballs_delay" in kwargs and "interleave" not in kwargs):
        if HAS_IPV6 and rec[0] != "TypeError":
            # interleaved by family: ::1 p0, 127.0.0.1 p2, ::1 p1, 127.0.0.1 p3
            text = " ".join(rec[2]) if rec[0] == "ExceptionGroup" else rec[1]
            assert text.index("p0") < text.index("p2") < text.index("p1") < text.index("p3")


async def _refused_single(host):
    port = free_port()
    try:
        await asyncio.get_running_loop().create_connection(Recorder, host, port)
    except OSError as exc:
        return exc_record(exc, port)
    return "connected"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_connection_refused_same_as_stock(host):
    rec = await same_as_stock(_refused_single, host)
    assert rec[0] == "ConnectionRefusedError" and rec[1] == errno.ECONNREFUSED


# -- Unix sockets ---------------------------------------------------------------------

async def _unix_server_lifecycle(sdir, variant):
    loop = asyncio.get_running_loop()
    sub = tempfile.mkdtemp(dir=sdir)
    path = os.path.join(sub, "s.sock")
    rec = {}
    kw = {}
    arg = path
    if variant == "pathlib":
        arg = pathlib.Path(path)
    elif variant == "bytes":
        arg = os.fsencode(path)
    elif variant == "stale":
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()           # leaves a stale socket file behind
    elif variant == "no_cleanup":
        if not PY313:
            return "n/a"
        kw["cleanup_socket"] = False
    srv = await loop.create_unix_server(Factory(on_data=echo), arg, **kw)
    try:
        name = srv.sockets[0].getsockname()
        rec["sockname"] = labelled(os.fsdecode(name), {path: "PATH"})
        rec["is_sock"] = stat.S_ISSOCK(os.stat(path).st_mode)
        t, p = await loop.create_unix_connection(Recorder, path)
        t.write(b"unix")
        await p.wait_data(4)
        rec["echo"] = bytes(p.data)
        rec["peername"] = labelled(str(t.get_extra_info("peername")), {path: "PATH"})
        rec["sockname_client"] = t.get_extra_info("sockname")
        t.close()
        await wait(p.lost)
    finally:
        srv.close()
        await srv.wait_closed()
    rec["exists_after_close"] = os.path.exists(path)
    return rec


@pytest.mark.parametrize("variant", ["str", "pathlib", "bytes", "stale", "no_cleanup"])
async def test_create_unix_server_path_same_as_stock(sdir, variant):
    rec = await same_as_stock(_unix_server_lifecycle, sdir, variant)
    if rec != "n/a":
        assert rec["echo"] == b"unix"
        if variant == "no_cleanup":
            assert rec["exists_after_close"] is True
        else:
            # the stock loop removes the socket file on close from 3.13 on
            assert rec["exists_after_close"] is (not PY313)


async def _unix_bind_errors(sdir):
    loop = asyncio.get_running_loop()
    sub = tempfile.mkdtemp(dir=sdir)
    regular = os.path.join(sub, "regular")
    with open(regular, "w") as f:
        f.write("not a socket")
    rec = {}
    cases = {
        "regular_file": regular,
        "missing_dir": os.path.join(sub, "nodir", "s.sock"),
        "too_long": os.path.join(sub, "x" * 200),
    }
    for name, path in cases.items():
        try:
            srv = await loop.create_unix_server(Factory(), path)
            srv.close()
            rec[name] = "ok"
        except OSError as exc:
            rec[name] = exc_record(exc, path)
        try:
            t, p = await loop.create_unix_connection(Recorder, path)
            t.close()
            rec[name + "_connect"] = "ok"
        except OSError as exc:
            rec[name + "_connect"] = exc_record(exc, path)
    rec["regular_still_there"] = os.path.isfile(regular)
    return rec


async def test_unix_bad_paths_same_as_stock(sdir):
    rec = await same_as_stock(_unix_bind_errors, sdir)
    assert rec["regular_file"][1] == errno.EADDRINUSE
    assert rec["regular_file_connect"][0] == "ConnectionRefusedError"
    assert rec["missing_dir"][0] == "FileNotFoundError"
    assert rec["regular_still_there"] is True


async def _unix_abstract():
    loop = asyncio.get_running_loop()
    name = "\0aioring-test-%d-%s" % (os.getpid(), type(loop).__name__)
    srv = await loop.create_unix_server(Factory(on_data=echo), name)
    try:
        t, p = await loop.create_unix_connection(Recorder, name)
        t.write(b"abs")
        await p.wait_data(3)
        peer = t.get_extra_info("peername")
        t.close()
        await wait(p.lost)
        return [type(srv.sockets[0].getsockname()).__name__, type(peer).__name__,
                bytes(p.data)]
    finally:
        srv.close()
        await srv.wait_closed()


async def test_unix_abstract_namespace_same_as_stock():
    await same_as_stock(_unix_abstract)


@pytest.mark.parametrize("blocking", [True, False])
async def test_create_unix_server_and_connection_sock(sdir, blocking):
    loop = asyncio.get_running_loop()
    path = os.path.join(sdir, "sock.s")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.setblocking(blocking)
    srv = await loop.create_unix_server(Factory(on_data=echo), sock=ls)
    try:
        assert ls.getblocking() is False
        assert srv.sockets[0].getsockname() == path
        cs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cs.connect(path)
        cs.setblocking(blocking)
        t, p = await loop.create_unix_connection(Recorder, sock=cs)
        assert cs.getblocking() is False
        assert t.get_extra_info("peername") == path
        t.write(b"via sock")
        await p.wait_data(8)
        assert bytes(p.data) == b"via sock"
        t.close()
        await wait(p.lost)
        assert cs.fileno() == -1
    finally:
        srv.close()
        await srv.wait_closed()
    assert ls.fileno() == -1


def _unix_cleanup_across_runs(loop, path):
    # create the server in one run of the loop, close it in another (or
    # outside any run): the stock 3.13 loop still removes the socket file
    srv = loop.run_until_complete(loop.create_unix_server(asyncio.Protocol, path))
    exists_open = os.path.exists(path)
    srv.close()
    loop.run_until_complete(srv.wait_closed())
    return exists_open, os.path.exists(path)


def test_unix_server_cleanup_across_loop_runs(any_loop, sdir):
    mine = _unix_cleanup_across_runs(any_loop, os.path.join(sdir, "a.sock"))
    stock = on_stock(_unix_cleanup_across_runs, os.path.join(sdir, "b.sock"))
    assert mine == stock == (True, not PY313)


def test_transport_fd_guard_across_loop_runs(any_loop):
    # A transport made in one run_until_complete() still owns its fd in the
    # next: add_reader() on it is refused with the same error.
    loop = any_loop

    async def setup():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        t, p = await loop.create_connection(asyncio.Protocol, *srv.sockets[0].getsockname())
        return srv, t

    srv, t = loop.run_until_complete(setup())
    try:
        fd = t.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, lambda: None)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.remove_writer(fd)
    finally:
        t.close()
        srv.close()
        loop.run_until_complete(srv.wait_closed())


# -- connect_accepted_socket -------------------------------------------------------------

@pytest.mark.parametrize("blocking", [True, False])
async def test_connect_accepted_socket(blocking):
    loop = asyncio.get_running_loop()
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = socket.create_connection(ls.getsockname(), timeout=5)
    a, _ = ls.accept()
    ls.close()
    a.setblocking(blocking)
    t, p = await loop.connect_accepted_socket(Recorder, a)
    try:
        assert a.getblocking() is False
        assert t.get_extra_info("peername") == c.getsockname()
        c.sendall(b"from peer")
        await p.wait_data(9)
        assert bytes(p.data) == b"from peer"
        t.write(b"to peer")
        t.write_eof()
        c.setblocking(False)
        got = b""
        while not got.endswith(b"to peer"):
            chunk = await asyncio.wait_for(loop.sock_recv(c, 100), 5)
            assert chunk
            got += chunk
        assert await asyncio.wait_for(loop.sock_recv(c, 100), 5) == b""
        c.close()
        await wait(p.lost)
        assert p.events == ["made", "data", "eof", ("lost", None)]
    finally:
        c.close()
        t.close()


# -- asyncio streams on top ----------------------------------------------------------

async def _stream_handler(reader, writer):
    line = await reader.readline()
    writer.write(line.upper())
    await writer.drain()
    rest = await reader.read()
    writer.write(b"bye:%d" % len(rest))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _stream_client(reader, writer):
    writer.write(b"hello\n")
    await writer.drain()
    assert await reader.readline() == b"HELLO\n"
    big = os.urandom(1 << 20)
    writer.write(big)
    await writer.drain()
    assert writer.can_write_eof()
    writer.write_eof()
    assert await reader.read() == b"bye:%d" % len(big)
    assert reader.at_eof()
    with pytest.raises(asyncio.IncompleteReadError) as ei:
        await reader.readexactly(1)
    assert ei.value.partial == b"" and ei.value.expected == 1
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 5)
    assert writer.is_closing()


async def test_streams_tcp():
    srv = await asyncio.start_server(_stream_handler, "127.0.0.1", 0)
    async with srv:
        addr = srv.sockets[0].getsockname()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), 5)
        assert writer.get_extra_info("peername") == addr
        await asyncio.wait_for(_stream_client(reader, writer), 10)
        await asyncio.sleep(0.01)


async def test_streams_unix(sdir):
    path = os.path.join(sdir, "st.sock")
    srv = await asyncio.start_unix_server(_stream_handler, path)
    async with srv:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 5)
        assert writer.get_extra_info("peername") == path
        await asyncio.wait_for(_stream_client(reader, writer), 10)
        await asyncio.sleep(0.01)


async def _stream_limit():
    async def handler(reader, writer):
        writer.write(b"x" * 100 + b"\n" + b"short\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with srv:
        reader, writer = await asyncio.open_connection(*srv.sockets[0].getsockname(), limit=16)
        rec = []
        try:
            await reader.readline()
        except Exception as exc:
            rec.append(exc_record(exc))
        rec.append(await reader.readline())
        rec.append(await reader.read())
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.01)
        return rec


async def test_stream_limit_same_as_stock():
    rec = await same_as_stock(_stream_limit)
    assert rec[0][0] == "ValueError"


# -- misuse -----------------------------------------------------------------------------

def _on_closed_loop(loop, path, addr):
    loop.close()
    P = asyncio.Protocol
    opened = []

    def tcp():
        opened.append(socket.create_connection(addr, timeout=5))
        return opened[-1]

    def unix():
        opened.append(socket.socket(socket.AF_UNIX))
        opened[-1].connect(path)
        return opened[-1]

    calls = {
        "create_connection": lambda: loop.create_connection(P, *addr),
        "create_connection_sock": lambda: loop.create_connection(P, sock=tcp()),
        "create_server": lambda: loop.create_server(P, "127.0.0.1", 0),
        "create_unix_server": lambda: loop.create_unix_server(P, path + ".2"),
        "create_unix_connection": lambda: loop.create_unix_connection(P, path),
        "create_unix_connection_sock": lambda: loop.create_unix_connection(P, sock=unix()),
        "connect_accepted_socket": lambda: loop.connect_accepted_socket(P, tcp()),
    }
    rec = {}
    for name, make in calls.items():
        coro = make()
        try:
            coro.send(None)
            rec[name] = "suspended"
        except StopIteration:
            rec[name] = "returned"
        except Exception as exc:
            rec[name] = exc_record(exc)
        finally:
            coro.close()
        coro = make()
        try:
            loop.run_until_complete(coro)
        except Exception as exc:
            rec[name + "_run"] = exc_record(exc)
        finally:
            coro.close()
    for s in opened:
        s.close()
    try:
        os.unlink(path + ".2")
    except FileNotFoundError:
        pass
    return rec


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_stream_methods_on_closed_loop(any_loop, sdir):
    path = os.path.join(sdir, "c.sock")
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(path)
    ls.listen(10)
    ts = socket.socket()
    ts.bind(("127.0.0.1", 0))
    ts.listen(10)
    try:
        mine = _on_closed_loop(any_loop, path, ts.getsockname())
        stock = on_stock(_on_closed_loop, path, ts.getsockname())
    finally:
        ls.close()
        ts.close()
    assert mine == stock
    for name, value in mine.items():
        assert value[0] == "RuntimeError", (name, value)


async def _bad_addresses(sdir):
    loop = asyncio.get_running_loop()
    P = Recorder
    port = free_port()
    calls = {
        "no_such_host": lambda: loop.create_connection(P, "no-such-host.invalid", 80),
        "bad_ipv4": lambda: loop.create_connection(P, "256.1.1.1", 80),
        "bad_service": lambda: loop.create_connection(P, "127.0.0.1", "no-such-service"),
        "port_too_big": lambda: loop.create_connection(P, "127.0.0.1", 70000),
        "family_mismatch": lambda: loop.create_connection(P, "127.0.0.1", port, family=socket.AF_INET6),
        "local_addr_family": lambda: loop.create_connection(
            P, "127.0.0.1", port, local_addr=("::1", 0)),
        "local_addr_bad": lambda: loop.create_connection(
            P, "127.0.0.1", port, local_addr=("no-such-host.invalid", 0)),
        "server_no_such_host": lambda: loop.create_server(P, "no-such-host.invalid", 0),
        "server_bad_ipv4": lambda: loop.create_server(P, "256.1.1.1", 0),
        "server_not_local": lambda: loop.create_server(P, "192.0.2.1", 0),
        "open_connection_no_such_host": lambda: asyncio.open_connection("no-such-host.invalid", 80),
        "unix_missing": lambda: loop.create_unix_connection(P, os.path.join(sdir, "missing")),
        "unix_too_long": lambda: loop.create_unix_connection(P, "/tmp/" + "x" * 200),
    }
    rec = {}
    for name, make in calls.items():
        try:
            res = await asyncio.wait_for(make(), 10)
        except Exception as exc:
            rec[name] = exc_record(exc, port)
        else:
            rec[name] = "ok"
            res[0].close()
    return rec


async def test_bad_addresses_same_as_stock(sdir):
    rec = await same_as_stock(_bad_addresses, sdir)
    assert rec["no_such_host"][0] == "gaierror"
    assert rec["unix_missing"][0] == "FileNotFoundError"


async def test_blocking_sockets_accepted_as_sock(sdir):
    # The stock loop takes a blocking socket for sock= and makes it
    # non-blocking (only the sock_* methods refuse one).
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    assert s.getblocking()
    sf = Factory(on_data=echo)
    srv = await loop.create_server(sf, sock=s)
    try:
        assert s.getblocking() is False
        c = socket.create_connection(s.getsockname(), timeout=5)
        assert c.getblocking()
        t, p = await loop.create_connection(Recorder, sock=c)
        assert c.getblocking() is False
        t.write(b"blocking")
        await p.wait_data(8)
        assert bytes(p.data) == b"blocking"
        t.close()
        await wait(p.lost)
    finally:
        srv.close()
        for sp in sf.made:
            sp.transport.close()
        await srv.wait_closed()


async def _wrong_arguments(sdir):
    loop = asyncio.get_running_loop()
    P = Recorder
    sub = tempfile.mkdtemp(dir=sdir)
    upath = os.path.join(sub, "u.sock")
    srv = await loop.create_server(Factory(), "127.0.0.1", 0)
    usrv = await loop.create_unix_server(Factory(), upath)
    addr = srv.sockets[0].getsockname()
    port = addr[1]
    tcp = socket.socket()
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix = socket.socket(socket.AF_UNIX)
    udgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    calls = {
        "conn_host_and_sock": lambda: loop.create_connection(P, "127.0.0.1", port, sock=tcp),
        "conn_port_and_sock": lambda: loop.create_connection(P, port=port, sock=tcp),
        "conn_nothing": lambda: loop.create_connection(P),
        "conn_dgram_sock": lambda: loop.create_connection(P, sock=dgram),
        "conn_hostname_no_ssl": lambda: loop.create_connection(P, *addr, ssl=None, server_hostname="x"),
        "conn_handshake_no_ssl": lambda: loop.create_connection(P, *addr, ssl_handshake_timeout=1),
        "conn_shutdown_no_ssl": lambda: loop.create_connection(P, *addr, ssl_shutdown_timeout=1),
        "conn_ssl_none": lambda: loop.create_connection(P, *addr, ssl=None),
        "conn_ssl_false": lambda: loop.create_connection(P, *addr, ssl=False),
        "conn_bad_kw": lambda: loop.create_connection(P, *addr, no_such_arg=1),
        "serve_host_and_sock": lambda: loop.create_server(P, "127.0.0.1", 0, sock=tcp),
        "serve_nothing": lambda: loop.create_server(P),
        "serve_dgram_sock": lambda: loop.create_server(P, sock=dgram),
        "serve_ssl_false": lambda: loop.create_server(P, "127.0.0.1", 0, ssl=False),
        "serve_ssl_true": lambda: loop.create_server(P, "127.0.0.1", 0, ssl=True),
        "serve_handshake_no_ssl": lambda: loop.create_server(P, "127.0.0.1", 0, ssl_handshake_timeout=1),
        "serve_shutdown_no_ssl": lambda: loop.create_server(P, "127.0.0.1", 0, ssl_shutdown_timeout=1),
        "serve_ssl_none": lambda: loop.create_server(P, "127.0.0.1", 0, ssl=None),
        "userve_path_and_sock": lambda: loop.create_unix_server(P, upath + "2", sock=unix),
        "userve_nothing": lambda: loop.create_unix_server(P),
        "userve_inet_sock": lambda: loop.create_unix_server(P, sock=tcp),
        "userve_dgram_sock": lambda: loop.create_unix_server(P, sock=udgram),
        "userve_ssl_false": lambda: loop.create_unix_server(P, upath + "3", ssl=False),
        "userve_handshake_no_ssl": lambda: loop.create_unix_server(P, upath + "4", ssl_handshake_timeout=1),
        "uconn_path_and_sock": lambda: loop.create_unix_connection(P, upath, sock=unix),
        "uconn_nothing": lambda: loop.create_unix_connection(P),
        "uconn_inet_sock": lambda: loop.create_unix_connection(P, sock=tcp),
        "uconn_dgram_sock": lambda: loop.create_unix_connection(P, sock=udgram),
        "uconn_hostname_no_ssl": lambda: loop.create_unix_connection(P, upath, server_hostname="x"),
        "uconn_handshake_no_ssl": lambda: loop.create_unix_connection(P, upath, ssl_handshake_timeout=1),
        "uconn_ssl_none": lambda: loop.create_unix_connection(P, upath, ssl=None),
        "accepted_dgram": lambda: loop.connect_accepted_socket(P, dgram),
        "accepted_handshake_no_ssl": lambda: loop.connect_accepted_socket(P, tcp, ssl_handshake_timeout=1),
        "open_connection_ssl_none": lambda: asyncio.open_connection(*addr, ssl=None),
        "open_connection_hostname_no_ssl": lambda: asyncio.open_connection(*addr, server_hostname="x"),
    }
    socks_repr = re.compile(r"<socket\.socket [^>]*>")
    rec = {}
    try:
        for name, make in calls.items():
            try:
                res = await asyncio.wait_for(make(), 10)
            except Exception as exc:
                r = exc_record(exc)
                rec[name] = (r[0], r[1], socks_repr.sub("<socket>", r[2]))
            else:
                rec[name] = "ok"
                if isinstance(res, tuple):
                    res[1 if isinstance(res[0], asyncio.StreamReader) else 0].close()
                else:
                    res.close()
                    await res.wait_closed()
    finally:
        for s in (tcp, dgram, unix, udgram):
            s.close()
        srv.close()
        usrv.close()
        await srv.wait_closed()
        await usrv.wait_closed()
        await asyncio.sleep(0.01)
    return rec


async def test_wrong_arguments_same_as_stock(sdir):
    rec = await same_as_stock(_wrong_arguments, sdir)
    assert rec["conn_host_and_sock"][0] == "ValueError"
    assert rec["serve_host_and_sock"][0] == "ValueError"
    assert rec["userve_path_and_sock"][0] == "ValueError"
    assert rec["conn_ssl_none"] == rec["serve_ssl_none"] == rec["uconn_ssl_none"] == "ok"
    assert rec["serve_ssl_false"][0] == "TypeError"


def test_processes_sharing_a_listening_socket_take_turns(loop_name):
    """Two forked processes serve one listening socket, as gunicorn -w 2 or
    uvicorn --workers 2 do: both get connections.  (A multishot accept kept
    its wait entry at the head of the socket's queue and the first process
    took all 100 connections, the other none.)"""
    factory = LOOP_FACTORIES[loop_name]
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    children = []
    try:
        for _ in range(2):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    async def main():
                        async def handle(reader, writer):
                            writer.write(str(os.getpid()).encode())
                            await writer.drain()
                            writer.close()
                        await asyncio.start_server(handle, sock=lsock)
                        await asyncio.sleep(30)
                    with asyncio.Runner(loop_factory=factory) as r:
                        r.run(main())
                finally:
                    os._exit(code)
            children.append(pid)
        counts = {}
        for i in range(100):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                who = b""
                while chunk := c.recv(100):
                    who += chunk
            counts[int(who)] = counts.get(int(who), 0) + 1
            time.sleep(0.002)
        assert set(counts) <= set(children)
        assert len(counts) == 2 and min(counts.values()) >= 5, counts
    finally:
        lsock.close()
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
