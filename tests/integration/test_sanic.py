"""Sanic on the stock loop and on aioring.

Sanic picks its loop in two places:

- `app.run()` / the `sanic` CLI create the loop with `asyncio.new_event_loop()`
  in the worker, after `app.setup_loop()`, which installs uvloop's policy when
  uvloop is importable unless `app.config.USE_UVLOOP = False`.  So aioring is
  selected with `asyncio.set_event_loop_policy(aioring.EventLoopPolicy())` at
  import time of the app's module plus `USE_UVLOOP = False`
  (docs/integrations/sanic.md).  Tested in subprocesses, in single-process
  mode and with the worker process Sanic's manager spawns.
- `await app.create_server(...)` serves on the running loop: tested in
  process, on both loops (tests/conftest.py).

Each handler reports the type of the loop it runs on.
"""
import asyncio
import hashlib
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

sanic = pytest.importorskip("sanic")
import aiohttp  # noqa: E402
from sanic import Sanic, response  # noqa: E402

import aioring  # noqa: E402
from _loop_helpers import REPO, python_env  # noqa: E402

_names = itertools.count()
TIMEOUT = aiohttp.ClientTimeout(total=30)


def loop_type_name():
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app():
    app = Sanic(f"aioring_sanic_{os.getpid()}_{next(_names)}")
    app.config.ACCESS_LOG = False
    # Sanic's touchup rewrites its HTTP classes' methods once per process:
    # a second app started in the same process fails in it (KeyError: 'send')
    # whatever the loop; the runs after the first do without it.
    app.config.TOUCHUP = False
    app.config.REQUEST_MAX_SIZE = 64 * 1024 * 1024

    @app.get("/loop")
    async def h_loop(request):
        return response.json({"loop": loop_type_name()})

    @app.post("/echo")
    async def h_echo(request):
        return response.json({"got": request.json, "loop": loop_type_name()})

    @app.post("/hash")
    async def h_hash(request):
        return response.json({"sha256": hashlib.sha256(request.body).hexdigest(),
                              "size": len(request.body)})

    @app.get("/big/<n:int>")
    async def h_big(request, n):
        return response.raw(b"x" * n)

    @app.get("/stream")
    async def h_stream(request):
        resp = await request.respond(content_type="text/plain")
        for i in range(10):
            await resp.send(f"part {i}\n")
            await asyncio.sleep(0.005)
        await resp.eof()

    @app.websocket("/ws")
    async def h_ws(request, ws):
        async for msg in ws:
            if msg == "loop":
                await ws.send(loop_type_name())
            elif isinstance(msg, bytes):
                await ws.send(hashlib.sha256(msg).digest())
            else:
                await ws.send("echo: " + msg)

    return app


async def test_create_server():
    """`await app.create_server(...)` on the running loop, exercised with an
    aiohttp client."""
    want = loop_type_name()
    assert (want == "aioring.loop.Loop") is \
        isinstance(asyncio.get_running_loop(), aioring.Loop)
    app = make_app()
    port = free_port()
    server = await app.create_server(host="127.0.0.1", port=port,
                                     return_asyncio_server=True)
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        assert server.is_serving()
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            async with s.get(url + "/loop") as r:
                assert r.status == 200
                assert await r.json() == {"loop": want}
            body = {"a": [1, 2, 3], "b": "\u00e9t\u00e9"}
            async with s.post(url + "/echo", json=body) as r:
                assert await r.json() == {"got": body, "loop": want}
            data = os.urandom(3 * 1024 * 1024 + 5)
            async with s.post(url + "/hash", data=data) as r:
                assert await r.json() == {
                    "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            async with s.get(url + "/big/5000000") as r:
                assert await r.read() == b"x" * 5_000_000
            async with s.get(url + "/stream") as r:
                assert [line async for line in r.content] == [
                    f"part {i}\n".encode() for i in range(10)]
            results = await asyncio.gather(*(
                s.get(url + "/loop") for _ in range(50)))
            assert [(await r.json())["loop"] for r in results] == [want] * 50
            for r in results:
                r.release()
            async with s.ws_connect(url + "/ws") as ws:
                await ws.send_str("loop")
                assert await ws.receive_str(timeout=10) == want
                await ws.send_str("hi")
                assert await ws.receive_str(timeout=10) == "echo: hi"
                blob = os.urandom(200_000)
                await ws.send_bytes(blob)
                assert await ws.receive_bytes(timeout=10) == \
                    hashlib.sha256(blob).digest()
                await ws.close()
            async with s.get(url + "/nope") as r:
                assert r.status == 404
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()
    assert not server.is_serving()


APP_SCRIPT = r'''
import asyncio, os, sys
mode, port, choice = sys.argv[1], int(sys.argv[2]), sys.argv[3]

# -- the documented snippet (docs/integrations/sanic.md) --
import aioring
from sanic import Sanic, response

if choice != "asyncio":
    asyncio.set_event_loop_policy(aioring.EventLoopPolicy())
app = Sanic("aioring_demo")
if choice != "uvloop-default":
    app.config.USE_UVLOOP = False    # else Sanic installs uvloop's policy
# --

app.config.ACCESS_LOG = False

@app.get("/")
async def index(request):
    loop = asyncio.get_running_loop()
    return response.json({
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "pid": os.getpid(), "q": request.args.get("q")})

@app.get("/stop")
async def stop(request):
    request.app.m.terminate()       # ask Sanic's manager to shut down
    return response.text("stopping")

@app.after_server_start
async def ready(app):
    print("READY", flush=True)

if __name__ == "__main__":
    print("MAIN", os.getpid(), flush=True)
    app.run(host="127.0.0.1", port=port, single_process=(mode == "single"),
            workers=1, motd=False)
    print("EXITED", flush=True)
'''


def run_sanic(tmp_path, mode, choice):
    """Run APP_SCRIPT; return (handler's JSON, main pid, stdout, stderr,
    returncode) after a request and SIGINT."""
    script = tmp_path / "sanic_app.py"
    script.write_text(APP_SCRIPT)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(port), choice], cwd=str(tmp_path),
        env=python_env(PYTHONPATH=REPO, SANIC_IGNORE_PRODUCTION_WARNING="1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout],
                              daemon=True)
    reader.start()
    seen = []
    try:
        while "READY\n" not in seen:         # Sanic logs to stdout too
            try:
                seen.append(lines.get(timeout=30))
            except queue.Empty:
                pytest.fail(f"the Sanic app did not start: {seen}")
        main_pid = int(next(x for x in seen if x.startswith("MAIN ")).split()[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?q=sanic",
                                    timeout=10) as r:
            got = json.loads(r.read())
        if mode == "single":
            proc.send_signal(signal.SIGINT)
        else:
            # A SIGINT that reaches Sanic's manager before it has the
            # worker's startup acknowledgement makes it spin forever (on
            # the stock loop too); a stop requested by the worker waits
            # for the acknowledgement.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stop",
                                        timeout=10) as r:
                assert r.read() == b"stopping"
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    return got, main_pid, out, err, proc.returncode


EXPECTED_LOOP = {"aioring": "aioring.loop.Loop",
                 "asyncio": "asyncio.unix_events._UnixSelectorEventLoop"}


@pytest.mark.parametrize("mode", ["single", "workers"])
def test_app_run(tmp_path, loop_name, mode):
    """app.run() with aioring's policy (and USE_UVLOOP = False) serves on
    aioring, in single-process mode and in the worker process Sanic spawns;
    without the policy on the stock loop."""
    got, main_pid, out, err, rc = run_sanic(tmp_path, mode, loop_name)
    assert got["loop"] == EXPECTED_LOOP[loop_name], err
    assert got["q"] == "sanic"
    if mode == "single":
        assert got["pid"] == main_pid
    else:
        assert got["pid"] != main_pid       # served by the spawned worker
    assert rc == 0, err
    assert "EXITED" in out
    assert "Traceback" not in err, err


def test_app_run_default_config_installs_uvloop(tmp_path):
    """Why the snippet sets USE_UVLOOP = False: with uvloop installed and
    the default config, Sanic replaces aioring's policy with uvloop's."""
    pytest.importorskip("uvloop")
    got, main_pid, out, err, rc = run_sanic(tmp_path, "single", "uvloop-default")
    assert got["loop"] == "uvloop.Loop"
    assert rc == 0, err
