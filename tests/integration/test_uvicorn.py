"""uvicorn serving FastAPI and Starlette apps, on the stock loop and on aioring.

The servers are real processes started with the command a user types:

    python -m uvicorn _asgi_apps:fastapi_app --loop aioring:new_event_loop

(uvicorn >= 0.36 takes `--loop module:callable` as the loop factory), next to
the same command with `--loop asyncio`.  Every scenario of _asgi_checks runs
against both servers in the same test and the responses are compared.  The
clients (httpx, websockets) run on the test's loop, which is itself each loop
in turn (tests/conftest.py).
"""
import asyncio
import os
import signal
import threading

import pytest
import uvicorn

import aioring

import _asgi_checks as checks
from _asgi_apps import APPS
from _asgi_checks import PYTHON, ServerProcess, Target, free_port, on_both

pytestmark = pytest.mark.timeout(300)

LOOP_ARG = {"asyncio": "asyncio", "aioring": "aioring:new_event_loop"}

# --http / --ws combinations: uvicorn's default (httptools + websockets),
# the pure-Python h11 + wsproto, and websockets' sans-I/O implementation.
PROTOCOLS = {
    "httptools": ["--http", "httptools", "--ws", "websockets"],
    "h11": ["--http", "h11", "--ws", "wsproto"],
    "sansio": ["--http", "httptools", "--ws", "websockets-sansio"],
}
CASES = [("fastapi", "httptools"), ("starlette", "httptools"),
         ("fastapi", "h11"), ("starlette", "h11"), ("fastapi", "sansio")]


def uvicorn_argv(app, loop_name, extra):
    return [PYTHON, "-m", "uvicorn", f"_asgi_apps:{app}_app",
            "--loop", LOOP_ARG[loop_name], *extra]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """servers(app, protocols) -> {loop name: ServerProcess}, started once
    per module and stopped at its end."""
    running = {}
    logs = tmp_path_factory.mktemp("uvicorn")

    def get(app, protocols):
        key = (app, protocols)
        if key not in running:
            pair = {}
            for loop_name in LOOP_ARG:
                port = free_port()
                argv = uvicorn_argv(app, loop_name, [
                    "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", "--no-access-log",
                    # A loaded CI machine must not see idle connections
                    # closed under a reusing client (an HTTP race, not a bug).
                    "--timeout-keep-alive", "60",
                    *PROTOCOLS[protocols]])
                pair[loop_name] = ServerProcess(
                    argv, Target(loop_name, port=port),
                    logs / f"{app}-{protocols}-{loop_name}.log")
            running[key] = pair
            for server in pair.values():
                server.wait_ready()
        return running[key]

    yield get
    for pair in running.values():
        for server in pair.values():
            server.stop()


@pytest.mark.parametrize("scenario", checks.ALL_SCENARIOS,
                         ids=lambda s: s.__name__)
@pytest.mark.parametrize("app,protocols", CASES)
async def test_uvicorn_cli(servers, app, protocols, scenario):
    pair = servers(app, protocols)
    await on_both({k: s.target for k, s in pair.items()}, scenario)
    for server in pair.values():
        server.check_healthy()


async def test_uvicorn_uds(sdir):
    """--uds: the server listens on a Unix socket."""
    pair = {}
    try:
        for loop_name in LOOP_ARG:
            path = os.path.join(sdir, f"{loop_name}.sock")
            argv = uvicorn_argv("fastapi", loop_name, [
                "--uds", path, "--log-level", "warning", "--no-access-log"])
            pair[loop_name] = ServerProcess(argv, Target(loop_name, uds=path),
                                            os.path.join(sdir, f"{loop_name}.log"))
        for server in pair.values():
            await asyncio.to_thread(server.wait_ready)
        targets = {k: s.target for k, s in pair.items()}
        for scenario in (checks.http_basic, checks.http_large_bodies,
                         checks.http_keepalive, checks.websocket_echo):
            await on_both(targets, scenario)
        for server in pair.values():
            server.check_healthy()
    finally:
        for server in pair.values():
            server.stop()


def test_uvicorn_cli_shutdown(loop_name, tmp_path):
    """SIGINT and SIGTERM stop the server cleanly, lifespan included, with
    the same log as the stock loop's server."""
    outputs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        port = free_port()
        server = ServerProcess(
            uvicorn_argv("fastapi", loop_name, ["--port", str(port)]),
            Target(loop_name, port=port), tmp_path / f"{sig.name}.log")
        try:
            server.wait_ready()
        finally:
            rc, out = server.stop(sig)
        # uvicorn re-raises the signal it caught once it has shut down:
        # SIGINT's KeyboardInterrupt ends in exit status 0 (stock loop too).
        assert rc == {signal.SIGINT: 0, signal.SIGTERM: -signal.SIGTERM}[sig], out
        lines = [line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("INFO:")]
        pid = server.proc.pid
        assert lines[:3] == [f"Started server process [{pid}]",
                             "Waiting for application startup.",
                             "Application startup complete."], out
        assert lines[-4:] == ["Shutting down", "Waiting for application shutdown.",
                              "Application shutdown complete.",
                              f"Finished server process [{pid}]"], out
        assert "Traceback" not in out and "ERROR" not in out, out
        outputs[sig] = lines


# Programmatic use ---------------------------------------------------------

def _config(app, loop, port=0, **kwargs):
    return uvicorn.Config(APPS[app], host="127.0.0.1", port=port, loop=loop,
                          log_level="warning", access_log=False, **kwargs)


def _bound_port(server):
    return server.servers[0].sockets[0].getsockname()[1]


async def _wait_started(server, task):
    for _ in range(500):
        if server.started:
            return
        if task.done():
            task.result()
            raise AssertionError("uvicorn.Server.serve() returned before starting")
        await asyncio.sleep(0.01)
    raise AssertionError("uvicorn.Server did not start")


def running_loop_name():
    return "aioring" if isinstance(asyncio.get_running_loop(), aioring.Loop) else "asyncio"


async def test_uvicorn_server_serve():
    """await uvicorn.Server(config).serve() on the running loop (the test's
    own loop: the stock loop, then aioring)."""
    loop_name = running_loop_name()
    server = uvicorn.Server(_config("fastapi", "none"))
    task = asyncio.create_task(server.serve())
    try:
        await _wait_started(server, task)
        target = Target(loop_name, port=_bound_port(server))
        for scenario in (checks.http_basic, checks.http_streaming,
                         checks.http_keepalive, checks.websocket_echo):
            await scenario(target)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
    assert not server.server_state.connections


@pytest.mark.parametrize("how", ["Server.run", "aioring.run"])
def test_uvicorn_server_in_thread(how):
    """uvicorn.Server(config).run() with loop="aioring:new_event_loop" (what
    uvicorn.run(app, loop=...) does), and aioring.run(server.serve()), each
    next to the stock loop's server, all in threads of this process."""
    import aioring

    servers, threads, errors = {}, [], []
    for loop_name in ("asyncio", "aioring"):
        if how == "Server.run" or loop_name == "asyncio":
            server = uvicorn.Server(_config("starlette", LOOP_ARG[loop_name]))
            run = server.run
        else:
            server = uvicorn.Server(_config("starlette", "none"))
            run = lambda server=server: aioring.run(server.serve())  # noqa: E731

        def body(run=run):
            try:
                run()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
        servers[loop_name] = server
        threads.append(threading.Thread(target=body))
        threads[-1].start()

    async def main():
        for server in servers.values():
            for _ in range(500):
                if server.started or errors:
                    break
                await asyncio.sleep(0.01)
            assert server.started, errors
        targets = {k: Target(k, port=_bound_port(s)) for k, s in servers.items()}
        for scenario in (checks.http_basic, checks.http_concurrent,
                         checks.websocket_echo):
            await on_both(targets, scenario)

    try:
        asyncio.run(main())
    finally:
        for server in servers.values():
            server.should_exit = True
        for t in threads:
            t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_uvicorn_bad_loop_name(tmp_path):
    """A mistyped factory is reported by uvicorn, not by a crash in aioring."""
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", "_asgi_apps:fastapi_app", "--port", str(port),
            "--loop", "aioring:no_such_factory"]
    server = ServerProcess(argv, Target("aioring", port=port), tmp_path / "log")
    server.proc.wait(30)
    rc, out = server.stop()
    assert rc != 0
    assert "Error loading custom loop setup function" in out, out
