"""Helpers shared by the stream parity tests (tests/test_stream*.py,
tests/test_server.py).

Not a test module.  Scenarios use real sockets only and record what a
program and its peer observe (callback order, bytes, exceptions).  Where the
stock loop's behaviour is version dependent, a scenario is run again on a
fresh stock loop in a worker thread (`on_stock_thread`) and the two records
are compared.
"""
import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile

import pytest

import aioring
from _loop_helpers import is_aioring, iou_worker_tids  # noqa: F401  (re-exported)


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = has_ipv6()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
KINDS = ["tcp4", "tcp6", "unix"]


def skip_unless_kind(kind):
    if kind == "tcp6" and not HAS_IPV6:
        pytest.skip("no IPv6 loopback")


@contextlib.contextmanager
def short_tmpdir():
    """A short directory for Unix socket paths (sun_path is 108 bytes)."""
    d = tempfile.mkdtemp(prefix="ars", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run_stock(scenario, args, kwargs, timeout):
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(asyncio.wait_for(scenario(*args, **kwargs), timeout))


async def on_stock_thread(scenario, *args, timeout=20, **kwargs):
    """Run `await scenario(*args)` on a fresh stock loop in a worker thread
    (the running loop stays responsive) and return its result."""
    return await asyncio.wait_for(
        asyncio.to_thread(_run_stock, scenario, args, kwargs, timeout),
        timeout + 5)


async def same_as_stock(scenario, *args, timeout=20, **kwargs):
    """Run the scenario here, then on a fresh stock loop; assert the records
    are equal and return it."""
    mine = await asyncio.wait_for(scenario(*args, **kwargs), timeout)
    stock = await on_stock_thread(scenario, *args, timeout=timeout, **kwargs)
    assert mine == stock
    return mine


def exc_record(exc, *strip):
    """(type name, message) of an exception, with the given substrings (ports,
    paths) replaced so that two runs compare equal."""
    if exc is None:
        return None
    text = str(exc)
    for s in strip:
        text = text.replace(str(s), "<X>")
    return (type(exc).__name__, getattr(exc, "errno", None), text)


def strip_ports(text):
    return re.sub(r"\b\d{4,5}\b", "<PORT>", text)


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Recorder(asyncio.Protocol):
    """Records the callbacks it gets, in order.  Consecutive data_received
    calls collapse into one 'data' entry (the chunking is the kernel's)."""

    def __init__(self, eof_result=None, on_made=None, on_data=None, on_eof=None):
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.data_types = set()
        self.transport = None
        self.exc = None
        self.eof_result = eof_result
        self.on_made = on_made
        self.on_data = on_data
        self.on_eof = on_eof
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.data_waiters = []

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        if self.on_made:
            self.on_made(self, transport)
        if not self.made.done():
            self.made.set_result(transport)

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data_types.add(type(data).__name__)
        self.data += data
        if self.on_data:
            self.on_data(self, data)
        for n, fut in list(self.data_waiters):
            if len(self.data) >= n and not fut.done():
                fut.set_result(None)

    def eof_received(self):
        self.events.append("eof")
        if self.on_eof:
            self.on_eof(self)
        if not self.eof.done():
            self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        self.exc = exc
        if not self.lost.done():
            self.lost.set_result(exc)
        for n, fut in self.data_waiters:
            if not fut.done():
                fut.set_result(None)

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")

    async def wait_data(self, n, timeout=10):
        if len(self.data) >= n:
            return
        fut = self.loop.create_future()
        self.data_waiters.append((n, fut))
        await asyncio.wait_for(fut, timeout)


class Factory:
    """A protocol factory that remembers the protocols it made."""

    def __init__(self, cls=Recorder, **kwargs):
        self.cls = cls
        self.kwargs = kwargs
        self.made = []
        self.first = None

    def __call__(self):
        proto = self.cls(**self.kwargs)
        self.made.append(proto)
        if self.first is None:
            self.first = asyncio.get_running_loop().create_future()
        if not self.first.done():
            self.first.set_result(proto)
        return proto

    async def next(self, timeout=10):
        if self.first is None:
            for _ in range(int(timeout * 100)):
                await asyncio.sleep(0.01)
                if self.first is not None:
                    break
            else:
                raise asyncio.TimeoutError
        return await asyncio.wait_for(asyncio.shield(self.first), timeout)


class Pair:
    """A server and one connection to it, of a given kind."""

    async def open(self, kind, server_factory, client_factory, tmpdir=None,
                   server_kw=None, client_kw=None):
        loop = asyncio.get_running_loop()
        skip_unless_kind(kind)
        server_kw = server_kw or {}
        client_kw = client_kw or {}
        self.kind = kind
        self.sfactory = server_factory
        if kind == "unix":
            self.path = os.path.join(tmpdir, "s.sock")
            self.server = await loop.create_unix_server(server_factory, self.path, **server_kw)
            self.ct, self.cp = await loop.create_unix_connection(
                client_factory, self.path, **client_kw)
        else:
            host = "127.0.0.1" if kind == "tcp4" else "::1"
            self.server = await loop.create_server(server_factory, host, 0, **server_kw)
            self.addr = self.server.sockets[0].getsockname()
            self.ct, self.cp = await loop.create_connection(
                client_factory, host, self.addr[1], **client_kw)
        self.sp = await server_factory.next()
        self.st = await asyncio.wait_for(self.sp.made, 10)
        return self

    async def aclose(self):
        for t in (self.ct, self.st):
            if not t.is_closing():
                t.abort()
        self.server.close()
        await asyncio.sleep(0)


async def open_pair(kind, tmpdir, server_factory=None, client_factory=None, **kw):
    server_factory = server_factory or Factory()
    client_factory = client_factory or Recorder
    return await Pair().open(kind, server_factory, client_factory, tmpdir, **kw)


def count_fds():
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def nofile_at_least(n):
    """Raise RLIMIT_NOFILE's soft limit (up to the hard one) for the block."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = soft
    if soft != resource.RLIM_INFINITY and soft < n:
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        if want != resource.RLIM_INFINITY and want < n:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {n}")
        yield
    finally:
        if want != soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fill(sock):
    """Write until the socket's send buffer is full."""
    chunk = b"x" * 65536
    try:
        while True:
            sock.send(chunk)
    except BlockingIOError:
        pass


async def wait(fut, timeout=10):
    """Await fut (shielded) with a bound, so no test can hang."""
    return await asyncio.wait_for(asyncio.shield(fut), timeout)


async def until(cond, timeout=10):
    """Wait (polling) until cond() is true; fail after `timeout` seconds."""
    for _ in range(int(timeout / 0.005)):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")
