"""run_in_executor, the default executor and the resolver helpers, on the
stock loop and on aioring."""
import asyncio
import concurrent.futures
import socket
import threading

import pytest

from _loop_helpers import on_stock


def add(a, b):
    return a + b, threading.get_ident()


def raise_value_error():
    raise ValueError("in executor")


async def test_run_in_executor_default():
    loop = asyncio.get_running_loop()
    result, ident = await loop.run_in_executor(None, add, 2, 3)
    assert result == 5
    assert ident != threading.get_ident()
    with pytest.raises(ValueError, match="in executor"):
        await loop.run_in_executor(None, raise_value_error)
    futs = [loop.run_in_executor(None, add, i, i) for i in range(50)]
    assert [r for r, _ in await asyncio.gather(*futs)] == [2 * i for i in range(50)]


async def test_default_executor_thread_names():
    loop = asyncio.get_running_loop()
    name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
    assert name.startswith("asyncio_")


async def test_run_in_executor_custom():
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mine") as ex:
        fut = loop.run_in_executor(ex, add, 1, 1)
        assert isinstance(fut, asyncio.Future)
        assert (await fut)[0] == 2
        name = await loop.run_in_executor(ex, lambda: threading.current_thread().name)
        assert name.startswith("mine")


async def test_run_in_executor_cancel():
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        blocker = loop.run_in_executor(ex, gate.wait, 5)
        queued = loop.run_in_executor(ex, add, 1, 2)
        queued.cancel()
        await asyncio.sleep(0)
        gate.set()
        assert await blocker is True
        assert queued.cancelled()


def test_set_default_executor(any_loop):
    loop = any_loop
    with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor"):
        loop.set_default_executor(object())
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dflt")
    loop.set_default_executor(ex)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("dflt")
    loop.run_until_complete(loop.shutdown_default_executor())
    assert ex._shutdown


def test_shutdown_default_executor(any_loop):
    loop = any_loop
    loop.run_until_complete(loop.shutdown_default_executor())     # none yet
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, add, 1, 2)
    # a custom executor is still fine
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert loop.run_until_complete(loop.run_in_executor(ex, add, 1, 2))[0] == 3


def test_shutdown_default_executor_waits(any_loop):
    loop = any_loop
    done = []

    def slow():
        threading.Event().wait(0.05)
        done.append(True)

    loop.run_in_executor(None, slow)
    loop.run_until_complete(loop.shutdown_default_executor())
    assert done == [True]


def test_close_shuts_default_executor_down(any_loop):
    loop = any_loop
    loop.run_until_complete(loop.run_in_executor(None, add, 1, 1))
    ex = loop._default_executor
    loop.close()
    assert ex._shutdown


def _resolve(loop):
    out = []
    for args, kwargs in ((("127.0.0.1", 80), {}),
                         (("127.0.0.1", 80), {"type": socket.SOCK_STREAM}),
                         (("::1", 443), {"family": socket.AF_INET6}),
                         (("localhost", "http"), {"proto": socket.IPPROTO_TCP}),
                         ((None, 0), {"flags": socket.AI_PASSIVE})):
        out.append(loop.run_until_complete(loop.getaddrinfo(*args, **kwargs)))
    out.append(loop.run_until_complete(
        loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)))
    out.append(loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 80))))
    try:
        loop.run_until_complete(loop.getaddrinfo("no such host.invalid", 80))
    except socket.gaierror as exc:
        out.append(("gaierror", exc.errno))
    return out


def test_getaddrinfo_getnameinfo_same_as_stock(any_loop):
    got = _resolve(any_loop)
    assert got == on_stock(_resolve)
    assert got[0] == socket.getaddrinfo("127.0.0.1", 80)
    assert got[5] == ("127.0.0.1", "80")


async def test_getaddrinfo_in_debug_mode():
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        infos = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    finally:
        loop.set_debug(False)
    assert infos == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
