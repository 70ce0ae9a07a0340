"""gunicorn worker classes that run uvicorn on aioring's loop.

    gunicorn -k aioring.gunicorn.AioringUvicornWorker app:app

Needs gunicorn and uvicorn-worker (`pip install gunicorn uvicorn-worker`).
This module is imported by gunicorn only; `import aioring` never imports it.
"""
from uvicorn_worker import UvicornWorker

__all__ = ("AioringUvicornWorker", "AioringUvicornH11Worker")


class AioringUvicornWorker(UvicornWorker):
    """uvicorn_worker.UvicornWorker on an aioring loop (uvicorn picks the
    HTTP implementation: httptools when installed, else h11)."""

    CONFIG_KWARGS = {"loop": "aioring:new_event_loop", "http": "auto"}


class AioringUvicornH11Worker(UvicornWorker):
    """uvicorn_worker.UvicornH11Worker (pure-Python h11) on an aioring loop."""

    CONFIG_KWARGS = {"loop": "aioring:new_event_loop", "http": "h11"}
