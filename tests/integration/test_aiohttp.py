"""aiohttp (web server and client) on the stock loop and on aioring.

Every async test runs on both loops (tests/conftest.py); the server and the
client share the loop under test.  Each request's handler reports the type of
the loop it runs on, and the tests check it is the test's own loop, so the
[aioring] runs really serve on aioring.
"""
import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import contextlib

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

import aioring  # noqa: E402
import _tls_helpers as tls  # noqa: E402
from _loop_helpers import REPO, python_env  # noqa: E402

MB = 1024 * 1024
PEERS = web.AppKey("peers", list)
WS_LOG = web.AppKey("ws_log", list)
TIMEOUT = aiohttp.ClientTimeout(total=30)


def loop_type_name(loop=None):
    loop = loop or asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


def expected_loop_name():
    name = loop_type_name()
    if "[aioring]" in os.environ.get("PYTEST_CURRENT_TEST", ""):
        assert isinstance(asyncio.get_running_loop(), aioring.Loop)
        assert name == "aioring.loop.Loop"
    return name


def payload(n, seed=b"aioring"):
    """n deterministic, incompressible-looking bytes."""
    out = bytearray()
    block = hashlib.sha512(seed).digest()
    while len(out) < n:
        block = hashlib.sha512(block).digest()
        out += block * 16
    return bytes(out[:n])


# --- the application -------------------------------------------------------

async def h_loop(request):
    return web.json_response({"loop": loop_type_name()})


async def h_echo_json(request):
    data = await request.json()
    return web.json_response({
        "got": data, "sum": sum(data["numbers"]), "loop": loop_type_name(),
        "method": request.method})


async def h_upload(request):
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    return web.json_response({"sha256": h.hexdigest(), "size": n,
                              "loop": loop_type_name()})


async def h_download(request):
    n = int(request.query["n"])
    return web.Response(body=payload(n), content_type="application/octet-stream",
                        headers={"X-Loop": loop_type_name()})


async def h_stream(request):
    resp = web.StreamResponse(headers={"X-Loop": loop_type_name()})
    resp.content_type = "text/plain"
    await resp.prepare(request)
    for i in range(int(request.query.get("n", "20"))):
        await resp.write(f"chunk {i}\n".encode())
        await asyncio.sleep(0.005)
    await resp.write_eof()
    return resp


async def h_peer(request):
    """For the keep-alive test: which client connection carried this."""
    request.app[PEERS].append(request.transport.get_extra_info("peername"))
    return web.Response(text=f"{request.match_info['i']} {loop_type_name()}")


async def h_slow(request):
    await asyncio.sleep(30)
    return web.Response(text="too late")


async def h_abort(request):
    request.transport.abort()
    await asyncio.sleep(1)
    return web.Response(text="never sent")


async def h_ws(request):
    ws = web.WebSocketResponse(max_msg_size=64 * MB)
    await ws.prepare(request)
    log = request.app[WS_LOG]
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == "loop":
                await ws.send_str(loop_type_name())
            elif msg.data.startswith("close "):
                await ws.close(code=int(msg.data.split()[1]),
                               message=b"server says bye")
                break
            else:
                await ws.send_str("echo: " + msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(hashlib.sha256(msg.data).digest() + msg.data[::-1])
    log.append(("closed", ws.close_code))
    return ws


def make_app():
    app = web.Application(client_max_size=64 * MB)
    app[PEERS] = []
    app[WS_LOG] = []
    app.router.add_get("/loop", h_loop)
    app.router.add_post("/echo-json", h_echo_json)
    app.router.add_put("/echo-json", h_echo_json)
    app.router.add_post("/upload", h_upload)
    app.router.add_get("/download", h_download)
    app.router.add_get("/stream", h_stream)
    app.router.add_get("/peer/{i}", h_peer)
    app.router.add_get("/slow", h_slow)
    app.router.add_get("/abort", h_abort)
    app.router.add_get("/ws", h_ws)
    return app


@contextlib.asynccontextmanager
async def serving(app=None, *, ssl_context=None, unix_path=None):
    """Serve the app with AppRunner + TCPSite (port 0) or UnixSite; yield
    (app, base URL); always clean up the runner."""
    app = app or make_app()
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    try:
        if unix_path:
            site = web.UnixSite(runner, unix_path)
            await site.start()
            yield app, "http://localhost"
        else:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            scheme = "https" if ssl_context else "http"
            yield app, f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --- tests -----------------------------------------------------------------

async def test_get_and_post_json():
    want = expected_loop_name()
    async with serving() as (app, url), \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(url + "/loop") as r:
            assert r.status == 200
            assert await r.json() == {"loop": want}
        body = {"numbers": list(range(100)), "text": "h\u00e9llo \u2603"}
        for method in ("post", "put"):
            async with getattr(s, method)(url + "/echo-json", json=body) as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("application/json")
                assert await r.json() == {"got": body, "sum": 4950, "loop": want,
                                          "method": method.upper()}
        async with s.get(url + "/no-such-page") as r:
            assert r.status == 404
            assert "404" in await r.text()


async def test_large_upload_and_download():
    want = expected_loop_name()
    size = 12 * MB + 12345
    data = payload(size, b"up")
    async with serving() as (app, url), \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        # a bytes body
        async with s.post(url + "/upload", data=data) as r:
            assert await r.json() == {"sha256": hashlib.sha256(data).hexdigest(),
                                      "size": size, "loop": want}

        # a streamed (chunked) body from an async generator
        async def gen():
            for i in range(0, size, 256 * 1024):
                yield data[i:i + 256 * 1024]
                await asyncio.sleep(0)
        async with s.post(url + "/upload", data=gen()) as r:
            assert await r.json() == {"sha256": hashlib.sha256(data).hexdigest(),
                                      "size": size, "loop": want}

        # download, read whole and in chunks
        async with s.get(url + "/download", params={"n": str(size)}) as r:
            assert r.headers["X-Loop"] == want
            assert r.content_length == size
            got = await r.read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload(size)).digest()
        h = hashlib.sha256()
        n = 0
        async with s.get(url + "/download", params={"n": str(size)}) as r:
            async for chunk in r.content.iter_chunked(100_000):
                h.update(chunk)
                n += len(chunk)
        assert n == size
        assert h.digest() == hashlib.sha256(payload(size)).digest()


async def test_streaming_response():
    want = expected_loop_name()
    async with serving() as (app, url), \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(url + "/stream", params={"n": "25"}) as r:
            assert r.status == 200
            assert r.headers["X-Loop"] == want
            assert r.headers.get("Transfer-Encoding") == "chunked"
            lines = [line async for line in r.content]
        assert lines == [f"chunk {i}\n".encode() for i in range(25)]


async def test_many_concurrent_requests_keep_alive():
    want = expected_loop_name()
    limit, total = 8, 400
    async with serving() as (app, url):
        conn = aiohttp.TCPConnector(limit=limit, force_close=False)
        async with aiohttp.ClientSession(connector=conn, timeout=TIMEOUT) as s:
            async def one(i):
                async with s.get(f"{url}/peer/{i}") as r:
                    assert r.status == 200
                    return await r.text()
            texts = await asyncio.gather(*(one(i) for i in range(total)))
        assert texts == [f"{i} {want}" for i in range(total)]
        peers = app[PEERS]
        assert len(peers) == total
        # keep-alive: the requests shared at most `limit` connections
        assert 1 <= len(set(peers)) <= limit


async def test_unix_site(sdir):
    want = expected_loop_name()
    path = os.path.join(sdir, "aiohttp.sock")
    async with serving(unix_path=path) as (app, url):
        conn = aiohttp.UnixConnector(path=path)
        async with aiohttp.ClientSession(connector=conn, timeout=TIMEOUT) as s:
            async with s.get(url + "/loop") as r:
                assert await r.json() == {"loop": want}
            body = {"numbers": [1, 2, 3]}
            async with s.post(url + "/echo-json", json=body) as r:
                assert (await r.json())["sum"] == 6
            size = 3 * MB + 7
            async with s.get(url + "/download", params={"n": str(size)}) as r:
                assert await r.read() == payload(size)


async def test_websocket():
    want = expected_loop_name()
    async with serving() as (app, url), \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        # text, binary, a large message, and a close from the client
        async with s.ws_connect(url + "/ws", max_msg_size=64 * MB) as ws:
            await ws.send_str("loop")
            assert await ws.receive_str(timeout=10) == want
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=10) == "echo: hello"
            blob = bytes(range(256)) * 4
            await ws.send_bytes(blob)
            assert await ws.receive_bytes(timeout=10) == (
                hashlib.sha256(blob).digest() + blob[::-1])
            big = payload(5 * MB + 3, b"ws")
            await ws.send_bytes(big)
            got = await ws.receive_bytes(timeout=20)
            assert got == hashlib.sha256(big).digest() + big[::-1]
            big_text = "\u00e9" * (2 * MB)
            await ws.send_str(big_text)
            assert await ws.receive_str(timeout=20) == "echo: " + big_text
            await ws.close(code=4000, message=b"client says bye")
            assert ws.closed
            assert ws.close_code == 1000        # the server's reply
        for _ in range(200):
            if app[WS_LOG]:
                break
            await asyncio.sleep(0.01)
        assert app[WS_LOG] == [("closed", 4000)]

        # a close from the server
        async with s.ws_connect(url + "/ws") as ws:
            await ws.send_str("close 4001")
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 4001
            assert msg.extra == "server says bye"
            assert ws.close_code == 4001
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSED
        for _ in range(200):
            if len(app[WS_LOG]) == 2:
                break
            await asyncio.sleep(0.01)
        # the server's close_code is the code of the client's reply
        assert app[WS_LOG] == [("closed", 4000), ("closed", 1000)]


async def test_server_closes_connection():
    """A raw server that reads the request and closes (no response), and an
    aiohttp handler that aborts its transport: both raise
    ServerDisconnectedError in the client."""
    got_requests = []

    async def handle(reader, writer):
        got_requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            with pytest.raises(aiohttp.ClientError) as e:
                async with s.get(f"http://127.0.0.1:{port}/x") as r:
                    await r.read()
            assert type(e.value) is aiohttp.ServerDisconnectedError
    finally:
        server.close()
        await server.wait_closed()
    # aiohttp retries an idempotent request once on a new connection
    assert len(got_requests) == 2
    for req in got_requests:
        assert req.startswith(b"GET /x HTTP/1.1\r\n")

    async with serving() as (app, url), \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        with pytest.raises(aiohttp.ClientError) as e:
            async with s.get(url + "/abort") as r:
                await r.read()
        assert type(e.value) is aiohttp.ServerDisconnectedError
        # the server still serves the next request
        async with s.get(url + "/loop") as r:
            assert (await r.json())["loop"] == expected_loop_name()


async def test_client_timeouts():
    """Exception types are asserted exactly, so both loops raise the same."""
    loop = asyncio.get_running_loop()
    async with serving() as (app, url), \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        # total timeout
        t0 = loop.time()
        with pytest.raises(asyncio.TimeoutError) as e:
            async with s.get(url + "/slow",
                             timeout=aiohttp.ClientTimeout(total=0.3)) as r:
                await r.read()
        assert type(e.value) is TimeoutError     # asyncio.TimeoutError
        assert 0.25 <= loop.time() - t0 < 5
        # read timeout
        t0 = loop.time()
        with pytest.raises(aiohttp.ServerTimeoutError) as e:
            async with s.get(url + "/slow",
                             timeout=aiohttp.ClientTimeout(sock_read=0.3)) as r:
                await r.read()
        assert type(e.value) is aiohttp.SocketTimeoutError
        assert 0.25 <= loop.time() - t0 < 5
        # the session still works after both
        async with s.get(url + "/loop") as r:
            assert (await r.json())["loop"] == expected_loop_name()


async def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]        # bound, not listening
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            with pytest.raises(aiohttp.ClientConnectorError) as e:
                async with s.get(f"http://127.0.0.1:{port}/"):
                    pass
    assert isinstance(e.value.os_error, ConnectionRefusedError)


async def test_tls():
    want = expected_loop_name()
    client_ctx = tls.client_context()
    async with serving(ssl_context=tls.server_context()) as (app, url):
        assert url.startswith("https://")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            async with s.get(url + "/loop", ssl=client_ctx) as r:
                assert await r.json() == {"loop": want}
            size = 6 * MB + 1
            async with s.get(url + "/download", params={"n": str(size)},
                             ssl=client_ctx) as r:
                assert hashlib.sha256(await r.read()).digest() == \
                    hashlib.sha256(payload(size)).digest()
            data = payload(5 * MB, b"tls-up")
            async with s.post(url + "/upload", data=data, ssl=client_ctx) as r:
                assert (await r.json())["sha256"] == hashlib.sha256(data).hexdigest()
            async with s.ws_connect(url + "/ws", ssl=client_ctx) as ws:
                sslobj = ws.get_extra_info("ssl_object")
                assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
                assert dict(x[0] for x in sslobj.getpeercert()["subject"]) == \
                    {"commonName": "aioring test server"}
                await ws.send_str("over tls")
                assert await ws.receive_str(timeout=10) == "echo: over tls"
            # the default context does not trust the test CA
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.get(url + "/loop"):
                    pass
        # plain http to the TLS port: the server drops it
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            with pytest.raises(aiohttp.ClientError) as e:
                async with s.get(url.replace("https", "http") + "/loop") as r:
                    await r.read()
            assert type(e.value) is aiohttp.ServerDisconnectedError


RUN_APP = r"""
import asyncio, socket, sys
from aiohttp import web
import aioring

async def handler(request):
    loop = asyncio.get_running_loop()
    return web.json_response({"loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
                              "q": request.query.get("q")})

app = web.Application()
app.router.add_get("/", handler)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print("PORT", sock.getsockname()[1], flush=True)
loop = aioring.new_event_loop() if sys.argv[1] == "aioring" else None
web.run_app(app, sock=sock, loop=loop, print=lambda *a: print(*a, flush=True),
            shutdown_timeout=2)
print("EXITED CLEANLY", flush=True)
"""


def test_run_app_subprocess(loop_name):
    """web.run_app(app, loop=aioring.new_event_loop()) in a fresh process
    serves a request and exits on SIGINT, as run_app on the stock loop."""
    import json
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_APP, loop_name], cwd=REPO, env=python_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), (line, proc.stderr.read())
        port = int(line.split()[1])
        banner = proc.stdout.readline()
        assert "Running on" in banner, banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?q=hi", timeout=10) as r:
            got = json.loads(r.read())
        want = "aioring.loop.Loop" if loop_name == "aioring" else \
            "asyncio.unix_events._UnixSelectorEventLoop"
        assert got == {"loop": want, "q": "hi"}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "EXITED CLEANLY" in out
    assert "Traceback" not in err, err
