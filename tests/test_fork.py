"""fork() from a process with a running loop (docs/differences.md).

The child of an aioring process gets RuntimeError naming fork() from every
use of the parent's loop, and never writes into the parent's ring (its SQ
and CQ are mapped shared, and its descriptor names the parent's ring); a new
loop in the child works; the parent's loop, its transports, server, timers,
pending sock_recv, fixed-file slots and receive buffers keep working while
the child lives and after it is gone.

Children report through a pipe (JSON) and end with os._exit: they never
return into pytest.
"""
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import traceback

import pytest

import aioring

FACTORIES = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.new_event_loop}


def _fork_child(body):
    """Fork; the child runs body() -> JSON-able result, sent up a pipe.
    Returns (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        code = 1
        try:
            try:
                result = body()
                code = 0
            except BaseException:
                result = {"child_error": traceback.format_exc()}
            data = json.dumps(result).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


async def _child_result(loop, pid, r):
    """Wait for the child (the loop keeps running meanwhile)."""
    def collect():
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        return b"".join(chunks), status
    data, status = await asyncio.wait_for(loop.run_in_executor(None, collect), 60)
    result = json.loads(data)
    assert "child_error" not in result, result["child_error"]
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def _try(fn):
    try:
        fn()
    except RuntimeError as e:
        return ["RuntimeError", str(e)]
    except Exception as e:     # pragma: no cover - reported to the parent
        return [type(e).__name__, str(e)]
    return "ok"


def _step(coro):
    try:
        coro.send(None)
    finally:
        coro.close()


def _new_loop_works():
    """In the child: a new loop echoes over a socket pair, runs a
    subprocess and timers."""
    async def main():
        a, b = socket.socketpair()
        ra, wa = await asyncio.open_connection(sock=a)
        rb, wb = await asyncio.open_connection(sock=b)
        wa.write(b"ping" * 1000)
        got = await rb.readexactly(4000)
        wa.close()
        wb.close()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('from the grandchild')",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        loop = asyncio.get_running_loop()
        fired = loop.create_future()
        loop.call_later(0.01, fired.set_result, "timer")
        return {"echo": got == b"ping" * 1000, "subprocess": out.decode().strip(),
                "rc": proc.returncode, "timer": await fired,
                "loop": type(loop).__module__}
    if sys.version_info >= (3, 12):
        first = asyncio.run(main(), loop_factory=aioring.new_event_loop)
    else:
        with asyncio.Runner(loop_factory=aioring.new_event_loop) as runner:
            first = runner.run(main())
    second = aioring.run(main())
    return [first, second]


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def _parent_setup(loop):
    """Live transports, a server, timers, a pending sock_recv, fixed-file
    slots and the receive buffers in use."""
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"warm up")
    assert await reader.readexactly(7) == b"warm up"
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    pending_recv = asyncio.ensure_future(loop.sock_recv(a, 100))
    timer_fired = loop.create_future()
    timer = loop.call_later(0.3, timer_fired.set_result, True)
    await asyncio.sleep(0.01)
    return dict(server=server, port=port, reader=reader, writer=writer, a=a, b=b,
                pending_recv=pending_recv, timer_fired=timer_fired, timer=timer)


async def _parent_still_works(loop, st, tag):
    st["writer"].write(tag * 5000)
    assert await st["reader"].readexactly(len(tag) * 5000) == tag * 5000
    # the server still accepts, and echoes
    r, w = await asyncio.open_connection("127.0.0.1", st["port"])
    w.write(tag)
    assert await r.readexactly(len(tag)) == tag
    w.close()
    await w.wait_closed()


async def test_child_cannot_use_the_parents_loop():
    loop = asyncio.get_running_loop()
    on_aioring = isinstance(loop, aioring.Loop)
    st = await _parent_setup(loop)
    info_before = loop._ring_info() if on_aioring else None
    transport = st["writer"].transport
    server = st["server"]

    def child():
        async def coro():
            return 1
        res = {}
        res["run_until_complete"] = _try(lambda: loop.run_until_complete(coro()))
        res["call_soon"] = _try(lambda: loop.call_soon(print))
        res["call_later"] = _try(lambda: loop.call_later(1, print))
        res["call_soon_threadsafe"] = _try(lambda: loop.call_soon_threadsafe(print))
        c = coro()
        res["create_task"] = _try(lambda: loop.create_task(c))
        c.close()
        res["write"] = _try(lambda: transport.write(b"from the child"))
        if on_aioring:
            # (on the stock loop these change the epoll instance the child
            # shares with its parent: the parent would stop reading)
            res["sock_recv"] = _try(lambda: _step(loop.sock_recv(st["b"], 1)))
            res["add_reader"] = _try(lambda: loop.add_reader(st["b"].fileno(), print))
            res["pause_reading"] = _try(transport.pause_reading)
            res["transport_close"] = _try(transport.close)
            res["server_close"] = _try(server.close)
        res["is_running"] = loop.is_running()
        res["close"] = _try(loop.close)
        res["new_loop"] = _new_loop_works()
        return res

    pid, r = _fork_child(child)
    if on_aioring:
        # the parent goes on while the child uses the loop
        await _parent_still_works(loop, st, b"during")
    res = await _child_result(loop, pid, r)

    first, second = res["new_loop"]
    for new in (first, second):
        assert new == {"echo": True, "subprocess": "from the grandchild", "rc": 0,
                       "timer": "timer", "loop": "aioring.loop"}
    # forked from inside the running loop: the child's copy still says so,
    # on both loops, and close() refuses as it does in the parent
    assert res["is_running"] is True
    assert res["close"] == ["RuntimeError", "Cannot close a running event loop"]
    if on_aioring:
        for what in ("run_until_complete", "call_soon", "call_later",
                     "call_soon_threadsafe", "create_task", "sock_recv", "add_reader",
                     "write", "pause_reading", "transport_close", "server_close"):
            kind, message = res[what]
            assert kind == "RuntimeError", (what, res[what])
            assert "fork()" in message and str(os.getpid()) in message, (what, message)
    else:
        # the stock loop lets the child use it (it shares the parent's epoll)
        assert res["run_until_complete"][0] == "RuntimeError"  # already running
        for what in ("call_soon", "call_later", "create_task", "write"):
            assert res[what] == "ok", (what, res[what])
        # and the child's write went out on the socket it shares
        assert await st["reader"].readexactly(14) == b"from the child"

    # after the child: everything of the parent's still works
    await _parent_still_works(loop, st, b"after")
    st["b"].send(b"for the pending recv")
    assert await asyncio.wait_for(st["pending_recv"], 10) == b"for the pending recv"
    assert await asyncio.wait_for(st["timer_fired"], 10) is True
    if on_aioring:
        info = loop._ring_info()
        assert info["fixed_files"] and info["fixed_files_in_use"] >= 3
        assert info["fixed_files_in_use"] == info_before["fixed_files_in_use"]
        assert info["recv_buffer_ring"] == info_before["recv_buffer_ring"]
        assert info["recv_buffers_provided"] >= info_before["recv_buffers_provided"]
    st["writer"].close()
    await st["writer"].wait_closed()
    st["server"].close()
    await st["server"].wait_closed()
    st["a"].close()
    st["b"].close()


@pytest.mark.parametrize("defer_taskrun", ["1", "0"])
def test_child_closes_a_stopped_parent_loop(loop_name, defer_taskrun, monkeypatch):
    """Forked while the loop is stopped: in the child, run_until_complete()
    raises on aioring, close() releases the child's copy only (as on the
    stock loop) and the parent's loop, which had used its fixed files and
    receive buffers before, goes on.  (The child's close took the parent's
    buffer ring with it, IORING_UNREGISTER_PBUF_RING on the shared ring,
    when the ring was not single-issuer, as with AIORING_DEFER_TASKRUN=0 or
    before Linux 6.1: the parent's next receive never completed.)"""
    if loop_name == "asyncio" and defer_taskrun == "0":
        pytest.skip("an aioring switch")
    monkeypatch.setenv("AIORING_DEFER_TASKRUN", defer_taskrun)
    loop = FACTORIES[loop_name]()
    try:
        st = loop.run_until_complete(_parent_setup(loop))
        # the transports the parent had are gone: the buffer ring is idle
        st["writer"].close()
        loop.run_until_complete(st["writer"].wait_closed())
        loop.run_until_complete(asyncio.sleep(0.01))

        def child():
            async def coro():
                return 1
            res = {}
            if loop_name == "aioring":
                # (the stock loop would run: one pass over the epoll instance
                # it shares with the parent, whose callbacks then run here)
                c = coro()
                res["run"] = _try(lambda: loop.run_until_complete(c))
                c.close()
            res["close"] = _try(loop.close)
            res["closed"] = loop.is_closed()
            res["after_close"] = _try(lambda: loop.call_soon(print))
            res["new_loop"] = _new_loop_works()
            return res

        pid, r = _fork_child(child)
        res = loop.run_until_complete(_child_result(loop, pid, r))
        if loop_name == "aioring":
            assert res["run"][0] == "RuntimeError" and "fork()" in res["run"][1]
        assert res["close"] == "ok" and res["closed"] is True
        assert res["after_close"] == ["RuntimeError", "Event loop is closed"]
        assert res["new_loop"][0]["echo"] and res["new_loop"][1]["echo"]

        async def parent_after():
            st["reader"], st["writer"] = await asyncio.open_connection(
                "127.0.0.1", st["port"])
            for _ in range(3):
                await _parent_still_works(loop, st, b"x" * 70000)
            st["b"].send(b"late")
            assert await asyncio.wait_for(st["pending_recv"], 10) == b"late"
            st["writer"].close()
            await st["writer"].wait_closed()
            st["server"].close()
            await st["server"].wait_closed()
        loop.run_until_complete(parent_after())
        if loop_name == "aioring":
            info = loop._ring_info()
            assert info["recv_buffer_ring"] and info["fixed_files"]
        st["a"].close()
        st["b"].close()
    finally:
        loop.close()


def test_garbage_collected_loop_in_the_child():
    """The child drops the parent's (stopped) loop and its transports: their
    finalizers must not touch the parent's ring either.  (aioring only: on
    the stock loop the transports' finalizers unregister their sockets from
    the epoll instance the child shares with its parent, which then stops
    reading them.)"""
    loop = aioring.new_event_loop()
    try:
        st = loop.run_until_complete(_parent_setup(loop))

        def child():
            import gc
            import warnings
            nonlocal loop
            st.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del_loop = loop
                loop = None
                del del_loop
                gc.collect()
            return {"new_loop": _new_loop_works()}

        pid, r = _fork_child(child)
        res = loop.run_until_complete(_child_result(loop, pid, r))
        assert res["new_loop"][0]["echo"]
        loop.run_until_complete(_parent_still_works(loop, st, b"after gc"))
        st["b"].send(b"z")
        assert loop.run_until_complete(asyncio.wait_for(st["pending_recv"], 10)) == b"z"
        st["writer"].close()
        st["server"].close()
        loop.run_until_complete(st["server"].wait_closed())
        st["a"].close()
        st["b"].close()
    finally:
        loop.close()


def _mp_target(conn):  # pragma: no cover - runs in the child
    try:
        conn.send(_new_loop_works())
    except BaseException:
        conn.send({"child_error": traceback.format_exc()})
    finally:
        conn.close()


async def test_multiprocessing_fork_from_a_running_loop():
    """multiprocessing's 'fork' start method from inside a running loop:
    the child runs a loop of its own; the parent's loop goes on."""
    loop = asyncio.get_running_loop()
    st = await _parent_setup(loop)
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe()
    import warnings
    with warnings.catch_warnings():
        # 3.12+: "This process is multi-threaded, use of fork() may lead to
        # deadlocks" (the executor's threads)
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = ctx.Process(target=_mp_target, args=(child_conn,))
        proc.start()
    child_conn.close()
    await _parent_still_works(loop, st, b"mp")
    result = await asyncio.wait_for(loop.run_in_executor(None, parent_conn.recv), 60)
    await loop.run_in_executor(None, proc.join, 60)
    assert proc.exitcode == 0
    assert not isinstance(result, dict), result["child_error"]
    assert result[0]["echo"] and result[0]["subprocess"] == "from the grandchild"
    await _parent_still_works(loop, st, b"mp after")
    st["b"].send(b"mp")
    assert await asyncio.wait_for(st["pending_recv"], 10) == b"mp"
    st["writer"].close()
    st["server"].close()
    await st["server"].wait_closed()
    st["a"].close()
    st["b"].close()


async def test_subprocess_after_a_fork():
    """Subprocesses started after a fork (child gone) work as before."""
    loop = asyncio.get_running_loop()
    pid, r = _fork_child(lambda: {"ok": True})
    assert await _child_result(loop, pid, r) == {"ok": True}
    for _ in range(3):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(b"x" * 100000)
        assert out == b"x" * 100000 and proc.returncode == 0


def test_ring_layer_refuses_a_forked_ring():
    """The ring layer itself: a ring set up before fork() hands out no SQE
    and refuses to enter or register in the child (EBADFD); the parent's
    ring goes on, and a ring set up in the child works."""
    from aioring._ring.ring import Ring
    ring = Ring(8)
    ring.register_files_sparse(4)

    def child():
        res = {"nop": ring.nop(1),
               "submit": _try_any(lambda: ring.submit(1, 1)),
               "update_files": _try_any(lambda: ring.update_files(0, [0]))}
        ring.close()
        own = Ring(8)
        own.nop(5)
        own.submit(1, 5)
        res["own"] = own.reap()
        own.close()
        return res

    pid, r = _fork_child(child)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    res = json.loads(data)
    assert res["nop"] is False
    assert res["submit"][0] == "OSError" and "File descriptor in bad state" in res["submit"][1]
    assert res["update_files"][0] == "OSError"
    assert res["own"] == [[5, 0, 0]]
    try:
        # the parent's ring still goes round, its file table still there
        assert ring.nop(7)
        ring.submit(1, 5)
        assert ring.reap() == [(7, 0, 0)]
        ring.update_files(0, [0])
    finally:
        ring.close()


def _try_any(fn):
    try:
        out = fn()
    except Exception as e:
        return [type(e).__name__, str(e)]
    return repr(out)
