"""hypercorn through its Python API on aioring:

    config = hypercorn.config.Config(); config.bind = ["127.0.0.1:8000"]
    asyncio.run(hypercorn.asyncio.serve(app, config), loop_factory=aioring.new_event_loop)

The test runs on each loop (tests/conftest.py) and serves the apps with
hypercorn.asyncio.serve() on its own loop; the same app is served on the other
loop in a thread, and every scenario of _asgi_checks runs against both, the
responses compared (HTTP/1.1 and WebSocket).
"""
import asyncio
import threading

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

import aioring
import _asgi_checks as checks
from _asgi_apps import APPS
from _asgi_checks import Target, free_port, on_both

pytestmark = pytest.mark.timeout(300)

FACTORIES = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.new_event_loop}


def _config(port):
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.keep_alive_timeout = 60
    config.accesslog = None
    config.websocket_max_message_size = 32 * 1024 * 1024
    return config


async def _wait_ready(target, task=None):
    async with target.http(timeout=2) as client:
        for _ in range(300):
            if task is not None and task.done():
                task.result()
            try:
                if (await client.get("/loop")).status_code == 200:
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("hypercorn did not start")


class ThreadServer:
    """hypercorn.asyncio.serve() on a loop of its own in a thread."""

    def __init__(self, app, loop_name):
        self.port = free_port()
        self.loop = FACTORIES[loop_name]()
        self.stop_event = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(app,))
        self.thread.start()

    def _run(self, app):
        async def main():
            self.stop_event = asyncio.Event()
            await serve(app, _config(self.port), shutdown_trigger=self.stop_event.wait)
        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            self.loop.close()

    def stop(self):
        if self.stop_event is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.mark.parametrize("app", ["fastapi", "starlette"])
async def test_hypercorn_serve(app):
    here = "aioring" if isinstance(asyncio.get_running_loop(), aioring.Loop) else "asyncio"
    other = "asyncio" if here == "aioring" else "aioring"
    stop = asyncio.Event()
    port = free_port()
    task = asyncio.create_task(
        serve(APPS[app], _config(port), shutdown_trigger=stop.wait))
    remote = ThreadServer(APPS[app], other)
    try:
        targets = {here: Target(here, port=port), other: Target(other, port=remote.port)}
        await _wait_ready(targets[here], task)
        await _wait_ready(targets[other])
        for scenario in checks.ALL_SCENARIOS:
            await on_both(targets, scenario)
    finally:
        stop.set()
        await asyncio.to_thread(remote.stop)
        await asyncio.wait_for(task, 20)
    assert task.result() is None
