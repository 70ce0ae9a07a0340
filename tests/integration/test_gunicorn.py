"""gunicorn with uvicorn workers on aioring: aioring.gunicorn.

    gunicorn -k aioring.gunicorn.AioringUvicornWorker -w 2 app:app

runs next to the same worker on the stock loop (`_stock_workers.py`:
uvicorn_worker.UvicornWorker with loop "asyncio", since its "auto" is uvloop
when installed; and uvicorn_worker.UvicornH11Worker); every scenario of
_asgi_checks runs against both and the responses are compared.
"""
import asyncio
import signal
import subprocess
import time

import httpx
import pytest

import _asgi_checks as checks
from _asgi_checks import PYTHON, ServerProcess, Target, free_port, on_both

pytestmark = pytest.mark.timeout(300)

WORKER = {"asyncio": "_stock_workers.StockUvicornWorker",
          "aioring": "aioring.gunicorn.AioringUvicornWorker"}
H11_WORKER = {"asyncio": "uvicorn_worker.UvicornH11Worker",
              "aioring": "aioring.gunicorn.AioringUvicornH11Worker"}


def gunicorn_argv(worker, port, app="fastapi"):
    return [PYTHON, "-m", "gunicorn", "-k", worker, "-w", "2",
            "--bind", f"127.0.0.1:{port}", "--no-control-socket",
            "--keep-alive", "60", f"_asgi_apps:{app}_app"]


@pytest.fixture(scope="module", params=["auto", "h11"])
def gunicorns(request, tmp_path_factory):
    workers = WORKER if request.param == "auto" else H11_WORKER
    logs = tmp_path_factory.mktemp("gunicorn")
    pair = {}
    try:
        for loop_name, worker in workers.items():
            port = free_port()
            pair[loop_name] = ServerProcess(gunicorn_argv(worker, port),
                                            Target(loop_name, port=port),
                                            logs / f"{loop_name}.log")
        for server in pair.values():
            server.wait_ready(60)
        yield pair
    finally:
        for server in pair.values():
            server.stop()


def test_import_without_gunicorn():
    """`import aioring` does not import aioring.gunicorn (nor gunicorn)."""
    out = subprocess.run(
        [PYTHON, "-c", "import sys, aioring; "
         "print('aioring.gunicorn' in sys.modules, 'gunicorn' in sys.modules)"],
        env=checks.child_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("scenario", checks.ALL_SCENARIOS, ids=lambda s: s.__name__)
async def test_gunicorn_worker(gunicorns, scenario):
    await on_both({k: s.target for k, s in gunicorns.items()}, scenario)
    for server in gunicorns.values():
        server.check_healthy()


async def test_gunicorn_both_workers_on_aioring(gunicorns):
    """Each of the -w 2 workers runs its own aioring loop."""
    server = gunicorns["aioring"]
    pids = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    async with server.target.http(limits=limits) as client:
        for _ in range(20):
            infos = await asyncio.gather(*(client.get("/loop") for _ in range(20)))
            for r in infos:
                checks.check_loop_info(server.target, r.json())
                pids[r.json()["pid"]] = r.json()["loop_module"]
            if len(pids) == 2:
                break
    assert len(pids) == 2, pids
    assert server.proc.pid not in pids  # the workers, not the arbiter
    assert set(pids.values()) == {"aioring.loop"}


def test_gunicorn_shutdown(loop_name, tmp_path):
    """SIGTERM to the arbiter: both workers shut down cleanly (lifespan
    included) and the arbiter exits 0, as with the stock worker."""
    port = free_port()
    server = ServerProcess(gunicorn_argv(WORKER[loop_name], port),
                           Target(loop_name, port=port), tmp_path / "log")
    try:
        server.wait_ready(60)
        for _ in range(600):   # the second worker may still be booting
            if server.output().count("Application startup complete.") == 2:
                break
            time.sleep(0.1)
    finally:
        rc, out = server.stop(signal.SIGTERM, timeout=40)
    assert rc == 0, out
    assert out.count("Application shutdown complete.") == 2, out
    assert out.count("Finished server process") == 2, out
    assert "Shutting down: Master" in out, out
    assert "Traceback" not in out and "[ERROR]" not in out, out
