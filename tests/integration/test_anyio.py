"""anyio on aioring: anyio.run(..., backend="asyncio",
backend_options={"loop_factory": aioring.new_event_loop}).

Each test runs the same anyio program on the stock loop and on aioring
(in that order, in the same test), checks what it returns on each, and
that both return the same.
"""
import asyncio
import os
import signal
import sys
import threading

import anyio
import anyio.abc
import anyio.streams.tls
import anyio.to_thread
import anyio.from_thread
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import aioring
import _tls_helpers as tls
from _stream_helpers import short_tmpdir

LOOPS = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.new_event_loop}
LOOP_TYPES = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.Loop}


def run_on_both(main, *args):
    """main's result on each loop; each run checks it is on that loop."""
    results = {}
    for name, factory in LOOPS.items():
        async def checked():
            assert type(asyncio.get_running_loop()) is LOOP_TYPES[name]
            return await main(*args)
        results[name] = anyio.run(checked, backend="asyncio",
                                  backend_options={"loop_factory": factory})
    assert results["asyncio"] == results["aioring"], results
    return results["aioring"]


def test_task_group_start_and_results():
    async def main():
        order = []
        all_done = anyio.Event()

        async def worker(i, delay):
            await anyio.sleep(delay)
            order.append(i)
            if len(order) == 4:
                all_done.set()

        async def service(*, task_status=anyio.TASK_STATUS_IGNORED):
            task_status.started("ready")
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            for i, delay in enumerate([0.15, 0.05, 0.1, 0]):
                tg.start_soon(worker, i, delay)
            status = await tg.start(service)
            await all_done.wait()
            tg.cancel_scope.cancel()
        return order, status, tg.cancel_scope.cancel_called

    assert run_on_both(main) == ([3, 1, 2, 0], "ready", True)


def test_task_group_errors_become_an_exception_group():
    async def main():
        async def fail(exc, delay):
            await anyio.sleep(delay)
            raise exc

        async def slow():
            await anyio.sleep(10)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(fail, ValueError("a"), 0.01)
                tg.start_soon(fail, KeyError("b"), 0.01)
                tg.start_soon(slow)
        except BaseExceptionGroup as eg:
            return sorted(f"{type(e).__name__}:{e}" for e in eg.exceptions)

    assert run_on_both(main) == ["KeyError:'b'", "ValueError:a"]


def test_cancel_scopes_and_timeouts():
    async def main():
        clock = anyio.current_time
        t0 = clock()
        with anyio.move_on_after(0.05) as scope:
            await anyio.sleep(10)
        moved_on = (scope.cancelled_caught, 0.04 < clock() - t0 < 2)

        try:
            with anyio.fail_after(0.05):
                await anyio.sleep(10)
        except TimeoutError:
            failed = True
        else:
            failed = False

        # a shielded scope finishes its work inside a cancelled one
        done = []
        with anyio.CancelScope() as outer:
            outer.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)
                done.append("shielded")
            await anyio.sleep(1)
            done.append("not reached")

        # a deadline in the past cancels at once
        with anyio.move_on_after(-1) as past:
            await anyio.sleep(0)
        return moved_on, failed, done, outer.cancelled_caught, past.cancelled_caught

    assert run_on_both(main) == ((True, True), True, ["shielded"], True, True)


def test_tcp_byte_streams():
    payload = os.urandom(1 << 20)

    async def main():
        got = []

        async def handle(stream):
            async with stream:
                buffered = BufferedByteReceiveStream(stream)
                header = await buffered.receive_until(b"\n", 100)
                size = int(header)
                body = await buffered.receive_exactly(size)
                await stream.send(b"%d %d\n" % (len(body), body.count(b"\0")))
                got.append(body == payload)

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            replies = []
            for _ in range(3):
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    assert client.extra(anyio.abc.SocketAttribute.remote_port) == port
                    await client.send(b"%d\n" % len(payload))
                    await client.send(payload)
                    replies.append(await client.receive())
            tg.cancel_scope.cancel()
        await listener.aclose()
        return replies, got

    replies, got = run_on_both(main)
    assert replies == [b"%d %d\n" % (len(payload), payload.count(b"\0"))] * 3
    assert got == [True] * 3


def test_unix_streams():
    async def main(path):
        async def handle(stream):
            async with stream:
                async for chunk in stream:
                    await stream.send(chunk.upper())

        listener = await anyio.create_unix_listener(path)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            async with await anyio.connect_unix(path) as client:
                out = []
                for word in (b"alpha", b"beta", b"gamma"):
                    await client.send(word)
                    out.append(await client.receive())
                await client.send_eof()
                rest = b""
                async for chunk in client:
                    rest += chunk
            tg.cancel_scope.cancel()
        await listener.aclose()
        return out, rest, os.path.exists(path)

    with short_tmpdir() as d:
        results = {}
        for name, factory in LOOPS.items():
            path = os.path.join(d, name)
            results[name] = anyio.run(main, path, backend="asyncio",
                                      backend_options={"loop_factory": factory})
    assert results["asyncio"] == results["aioring"] == (
        [b"ALPHA", b"BETA", b"GAMMA"], b"", True)


def test_tls_streams():
    server_ctx = tls.server_context()
    client_ctx = tls.client_context()

    async def main():
        async def handle(stream):
            async with stream:
                data = await stream.receive()
                version = stream.extra(anyio.streams.tls.TLSAttribute.tls_version)
                await stream.send(data[::-1] + b" " + version.encode())

        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        listener = anyio.streams.tls.TLSListener(tcp, server_ctx)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            async with await anyio.connect_tcp(
                    "127.0.0.1", port, tls=True, ssl_context=client_ctx,
                    tls_hostname=tls.SERVER_HOST) as client:
                cert = client.extra(anyio.streams.tls.TLSAttribute.peer_certificate)
                await client.send(b"secret")
                reply = await client.receive()
            tg.cancel_scope.cancel()
        await listener.aclose()
        return reply, dict(x[0] for x in cert["subject"])["commonName"]

    reply, cn = run_on_both(main)
    assert reply.startswith(b"terces TLSv1.")
    assert cn == "aioring test server"


def test_udp_sockets():
    async def main():
        async with await anyio.create_udp_socket(local_host="127.0.0.1") as server:
            port = server.extra(anyio.abc.SocketAttribute.local_port)
            async with await anyio.create_connected_udp_socket(
                    "127.0.0.1", port) as client:
                for i in range(5):
                    await client.send(b"ping %d" % i)
                got = []
                for _ in range(5):
                    data, addr = await server.receive()
                    got.append(data)
                    await server.sendto(data.upper(), *addr)
                back = [await client.receive() for _ in range(5)]
        return got, back

    got, back = run_on_both(main)
    assert got == [b"ping %d" % i for i in range(5)]
    assert back == [b"PING %d" % i for i in range(5)]


def test_subprocess():
    async def main():
        script = ("import sys\n"
                  "for line in sys.stdin:\n"
                  "    print(line.strip()[::-1], flush=True)\n"
                  "sys.exit(3)\n")
        async with await anyio.open_process([sys.executable, "-c", script]) as proc:
            out = []
            stdout = BufferedByteReceiveStream(proc.stdout)
            for word in (b"abc", b"hello"):
                await proc.stdin.send(word + b"\n")
                out.append(await stdout.receive_until(b"\n", 100))
            await proc.stdin.aclose()
            code = await proc.wait()
        result = await anyio.run_process(
            [sys.executable, "-c", "import sys; print('x' * 100000); "
             "print('err', file=sys.stderr)"], check=False)
        return out, code, len(result.stdout), result.stderr, result.returncode

    assert run_on_both(main) == ([b"cba", b"olleh"], 3, 100001, b"err\n", 0)


def test_threads():
    async def main():
        loop_thread = threading.get_ident()

        def blocking(n):
            # back into the event loop from the worker thread
            value = anyio.from_thread.run(anyio.sleep, 0)
            return n * 2, threading.get_ident() != loop_thread, value

        results = []
        async with anyio.create_task_group() as tg:
            async def one(n):
                results.append(await anyio.to_thread.run_sync(blocking, n))
            for n in range(8):
                tg.start_soon(one, n)
        limiter = anyio.CapacityLimiter(1)
        limited = [await anyio.to_thread.run_sync(lambda: 1, limiter=limiter)
                   for _ in range(3)]
        return sorted(results), limited, limiter.borrowed_tokens

    results, limited, borrowed = run_on_both(main)
    assert results == [(n * 2, True, None) for n in range(8)]
    assert (limited, borrowed) == ([1, 1, 1], 0)


def test_memory_object_streams_and_sync_primitives():
    async def main():
        send, receive = anyio.create_memory_object_stream[int](max_buffer_size=2)
        got = []
        event = anyio.Event()
        lock = anyio.Lock()
        inside = []

        async def producer():
            async with send:
                for i in range(20):
                    await send.send(i)
            event.set()

        async def consumer():
            async with receive:
                async for item in receive:
                    got.append(item)

        async def locked(i):
            async with lock:
                inside.append(i)
                await anyio.sleep(0.001)
                inside.append(-i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            tg.start_soon(consumer)
            for i in range(1, 4):
                tg.start_soon(locked, i)
            await event.wait()
        # lock holders never interleave
        pairs = [inside[k:k + 2] for k in range(0, len(inside), 2)]
        return got, all(a == -b for a, b in pairs), len(inside)

    assert run_on_both(main) == (list(range(20)), True, 6)


def test_signal_receiver():
    async def main():
        with anyio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)
            got = []
            async for signum in signals:
                got.append(signum)
                if len(got) == 2:
                    break
        return sorted(got)

    assert run_on_both(main) == sorted([signal.SIGUSR1, signal.SIGUSR2])


def test_getaddrinfo_and_wait_readable():
    async def main():
        infos = await anyio.getaddrinfo("localhost", 80, family=2, type=1)
        import socket
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.setblocking(False)
            with anyio.move_on_after(0.05) as scope:
                await anyio.wait_readable(a)
            b.send(b"x")
            with anyio.fail_after(5):
                await anyio.wait_readable(a)
            data = a.recv(10)
        return sorted({info[4] for info in infos}), scope.cancelled_caught, data

    assert run_on_both(main) == ([("127.0.0.1", 80)], True, b"x")
