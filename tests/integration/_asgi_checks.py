"""What the ASGI server tests (test_uvicorn, test_gunicorn, test_hypercorn)
ask of a running server, and how a server process is started and stopped.

A scenario is an async function of a Target; it asserts what it gets and
returns a summary of it.  on_both() runs one scenario against the server on
the stock loop and against the server on aioring, names the loop that failed
and compares the two summaries, so a failure that is aioring's own stands out.
"""
import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosedError

from _asgi_apps import blob

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXPECTED_LOOP_MODULE = {"asyncio": "asyncio.unix_events", "aioring": "aioring.loop"}

MiB = 1024 * 1024


@dataclass
class Target:
    """A running server: where it listens and which loop it should run."""
    loop_name: str
    host: str = "127.0.0.1"
    port: int | None = None
    uds: str | None = None

    @property
    def base_url(self):
        return f"http://{self.host}:{self.port}" if self.uds is None else "http://localhost"

    def http(self, **kwargs):
        transport = httpx.AsyncHTTPTransport(uds=self.uds) if self.uds else None
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.base_url, transport=transport,
                                 trust_env=False, **kwargs)

    def ws(self, path="/ws", **kwargs):
        kwargs.setdefault("max_size", None)
        kwargs.setdefault("open_timeout", 15)
        kwargs.setdefault("close_timeout", 15)
        if self.uds:
            return unix_connect(self.uds, "ws://localhost" + path, **kwargs)
        return connect(f"ws://{self.host}:{self.port}{path}", proxy=None, **kwargs)

    async def open_raw(self):
        if self.uds:
            return await asyncio.open_unix_connection(self.uds)
        return await asyncio.open_connection(self.host, self.port)


async def on_both(targets, scenario):
    """Run scenario(target) for the server on each loop; compare the results."""
    results, errors = {}, {}
    for name, target in targets.items():
        try:
            results[name] = await asyncio.wait_for(scenario(target), 60)
        except Exception as exc:  # noqa: BLE001 - reported below, by loop
            errors[name] = exc
    if errors:
        failed = sorted(errors)
        passed = sorted(results)
        raise AssertionError(
            f"{scenario.__name__} failed with the server on {failed} "
            f"(passed on {passed}): "
            + "; ".join(f"{k}: {type(e).__name__}: {e}" for k, e in errors.items())
        ) from errors[failed[-1]]
    assert results["asyncio"] == results["aioring"], scenario.__name__
    return results["aioring"]


# Scenarios ----------------------------------------------------------------

def check_loop_info(target, info):
    assert info["loop_module"] == EXPECTED_LOOP_MODULE[target.loop_name], info
    if target.loop_name == "aioring":
        # The server imported the aioring under test, not another copy.
        assert info["aioring_file"].startswith(os.path.join(REPO, "aioring")), info


async def http_basic(target):
    async with target.http() as client:
        r = await client.get("/loop")
        assert r.status_code == 200
        check_loop_info(target, r.json())

        doc = {"name": "aioring", "n": 3, "nested": {"a": [1, 2, 3]}, "uni": "é✓"}
        r = await client.post("/echo", json=doc)
        assert r.status_code == 200
        assert r.json() == {"received": doc, "keys": sorted(doc), "count": 4}
        echo = (r.status_code, r.headers["content-type"], r.json())

        r = await client.get("/items/21", params={"q": "x y"})
        assert r.json() == {"item_id": 21, "q": "x y", "double": 42}
        item = (r.status_code, r.json())

        r = await client.get("/does-not-exist")
        assert r.status_code == 404
        missing = (r.status_code, r.text)

        r = await client.post("/loop")
        assert r.status_code == 405
    return echo, item, missing


async def http_large_bodies(target):
    size = 8 * MiB + 12345
    payload = blob(size)
    async with target.http() as client:
        r = await client.post("/upload", content=payload)
        assert r.status_code == 200
        assert r.json() == {"size": size, "sha256": hashlib.sha256(payload).hexdigest()}

        # A streamed (chunked) upload, in uneven pieces.
        async def pieces():
            for i in range(0, size, 300_001):
                yield payload[i:i + 300_001]
        r = await client.post("/upload", content=pieces())
        assert r.json()["size"] == size
        assert r.json()["sha256"] == hashlib.sha256(payload).hexdigest()

        r = await client.get(f"/download/{size}")
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == size
        assert r.content == payload

        # Read slowly: the server has to wait for the client's window.
        received = bytearray()
        async with client.stream("GET", f"/download/{4 * MiB}") as r:
            async for chunk in r.aiter_bytes():
                received += chunk
                if len(received) < MiB:
                    await asyncio.sleep(0.01)
        assert bytes(received) == blob(4 * MiB)
    return size


async def http_streaming(target):
    expected = b"".join(f"chunk {i}\n".encode() * 100 for i in range(40))
    async with target.http() as client:
        async with client.stream("GET", "/stream/40") as r:
            assert r.status_code == 200
            assert r.headers.get("transfer-encoding") == "chunked"
            chunks = [c async for c in r.aiter_raw()]
        body = b"".join(chunks)
        assert body == expected
        # The chunks came as the server produced them, not all at the end.
        assert len(chunks) > 5, len(chunks)
    return len(body)


async def http_concurrent(target):
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with target.http(limits=limits) as client:
        start = time.monotonic()
        sleeps = await asyncio.gather(*(client.get("/sleep/500") for _ in range(50)))
        elapsed = time.monotonic() - start
        assert [r.json() for r in sleeps] == [{"slept_ms": 500}] * 50
        # 50 requests of 500 ms each were served concurrently (25 s in turn).
        assert elapsed < 10, elapsed

        docs = [{"i": i, "pad": "x" * (i * 37 % 3000)} for i in range(100)]
        replies = await asyncio.gather(*(client.post("/echo", json=d) for d in docs))
        assert [r.json()["received"] for r in replies] == docs
    return len(sleeps), len(replies)


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


def _request(method, path, body=b""):
    extra = b""
    if body:
        extra = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return (b"%s %s HTTP/1.1\r\nhost: test\r\n%s\r\n" % (method, path, extra)) + body


async def http_keepalive(target):
    """Many requests on one connection, one at a time and then pipelined."""
    reader, writer = await target.open_raw()
    try:
        seen = []
        for i in range(30):
            writer.write(_request(b"GET", b"/items/%d?q=k" % i))
            status, headers, body = await _read_response(reader)
            assert status == 200
            assert headers.get("connection", "keep-alive") != "close"
            assert json.loads(body) == {"item_id": i, "q": "k", "double": 2 * i}
            seen.append(i)

        batch = b"".join(_request(b"POST", b"/echo", json.dumps({"i": i}).encode())
                         for i in range(20))
        writer.write(batch)
        pipelined = []
        for i in range(20):
            status, _, body = await _read_response(reader)
            assert status == 200
            pipelined.append(json.loads(body)["received"])
        assert pipelined == [{"i": i} for i in range(20)]

        writer.write(b"GET /items/1 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        status, headers, body = await _read_response(reader)
        assert status == 200 and headers.get("connection") == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    return seen, pipelined


async def websocket_echo(target):
    async with target.ws() as ws:
        await ws.send("info")
        check_loop_info(target, json.loads(await ws.recv()))

        await ws.send("hello ✓")
        text = await ws.recv()
        assert text == "hello ✓"

        await ws.send(bytes(range(256)))
        binary = await ws.recv()
        assert binary == bytes(range(256))

        big = blob(4 * MiB)
        await ws.send(big)
        assert await ws.recv() == big

        # A burst: many messages sent before any reply is read.
        for i in range(200):
            await ws.send(f"m{i}" if i % 2 else b"b%d" % i)
        burst = [await ws.recv() for _ in range(200)]
        assert burst == [f"m{i}" if i % 2 else b"b%d" % i for i in range(200)]

        await ws.close()  # client-initiated close
        client_close = (ws.close_code, ws.close_reason)
        assert client_close == (1000, "")

    async with target.ws() as ws:
        await ws.send("close")  # the server closes with 4001 "bye"
        try:
            await ws.recv()
        except ConnectionClosedError as exc:
            assert exc.rcvd is not None
            server_close = (exc.rcvd.code, exc.rcvd.reason)
        else:
            raise AssertionError("the server did not close the connection")
        assert server_close == (4001, "bye")
    return text, len(big), client_close, server_close


ALL_SCENARIOS = (http_basic, http_large_bodies, http_streaming, http_concurrent,
                 http_keepalive, websocket_echo)


# Server processes ---------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env():
    """The environment of a server process: the aioring of this checkout first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, HERE, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return env


class ServerProcess:
    """A server started as a subprocess; its output goes to a log file."""

    def __init__(self, argv, target, log_path):
        self.argv = argv
        self.target = target
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=HERE, env=child_env(),
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        transport = httpx.HTTPTransport(uds=self.target.uds) if self.target.uds else None
        with httpx.Client(base_url=self.target.base_url, transport=transport,
                          trust_env=False, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.argv} exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    if client.get("/loop").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.argv} not ready in {timeout}s:\n{self.output()}")

    def check_healthy(self):
        """Still running, and nothing in its log that looks like an error."""
        assert self.proc.poll() is None, f"server exited:\n{self.output()}"
        out = self.output()
        for bad in ("Traceback", "ERROR", "Exception in"):
            assert bad not in out, f"{self.target.loop_name} server log:\n{out}"

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stop the server; return its exit status and output."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode, self.output()


PYTHON = sys.executable
