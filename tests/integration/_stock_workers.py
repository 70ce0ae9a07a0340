"""gunicorn worker classes on the stock asyncio loop, for test_gunicorn's
comparison: uvicorn_worker.UvicornWorker's "auto" loop is uvloop when it is
installed, and UvicornH11Worker already runs the stock loop."""
from uvicorn_worker import UvicornWorker


class StockUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "asyncio", "http": "auto"}
