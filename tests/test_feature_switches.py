"""The io_uring features the loop can do without, switched off one at a time
(AIORING_FIXED_FILES, AIORING_RECV_MULTISHOT, AIORING_BUFFER_RING,
AIORING_DEFER_TASKRUN =0): each switch takes effect, and the loop then
takes the path an older kernel gets, with the same observable behaviour as
the stock loop.  The benchmarks' feature table measures the same switches.
(CI also runs the socket tests with these switches off.)
"""
import asyncio
import os
import socket
import threading

import pytest

import aioring
from aioring._ring import ring as R
from _stream_helpers import on_stock_thread

SWITCHES = {
    "AIORING_FIXED_FILES": lambda info: not info["fixed_files"],
    "AIORING_RECV_MULTISHOT": lambda info: not info["recv_multishot"],
    "AIORING_BUFFER_RING": lambda info: not info["recv_buffer_ring"],
    "AIORING_DEFER_TASKRUN": lambda info: not info["setup_flags"] & R.SETUP_DEFER_TASKRUN,
}


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def traffic():
    """Echo over TCP (protocol and streams, sizes across a receive buffer's
    64 KiB), sock_* calls, and a wake-up from another thread: what came back."""
    loop = asyncio.get_running_loop()
    seen = []
    srv = await loop.create_server(Echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for size in (1, 100, 5000, 40000, 200000):
        payload = os.urandom(size)
        writer.write(payload)
        got = await reader.readexactly(size)
        seen.append((size, got == payload))
    writer.close()
    await writer.wait_closed()
    srv.close()
    await srv.wait_closed()

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        await loop.sock_sendall(a, b"ping" * 1000)
        got = b""
        while len(got) < 4000:
            got += await loop.sock_recv(b, 4096)
        seen.append(("sock", got == b"ping" * 1000))

    fut = loop.create_future()
    threading.Timer(0.05, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
    seen.append(await asyncio.wait_for(fut, 5))
    return seen


@pytest.mark.parametrize("variable", sorted(SWITCHES))
def test_feature_switched_off(monkeypatch, variable):
    monkeypatch.setenv(variable, "0")

    async def main():
        mine = await traffic()
        info = asyncio.get_running_loop()._ring_info()     # (after the receives)
        stock = await on_stock_thread(traffic)
        return info, mine, stock

    info, mine, stock = aioring.run(main())
    assert SWITCHES[variable](info), info
    assert mine == stock
    assert all(ok for _, ok in mine[:-1]) and mine[-1] == "woken"


def test_features_on_by_default():
    async def main():
        await traffic()
        return asyncio.get_running_loop()._ring_info()

    info = aioring.run(main())
    for variable, off in SWITCHES.items():
        assert not off(info), variable
