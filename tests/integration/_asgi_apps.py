"""Small ASGI applications served by the uvicorn, gunicorn and hypercorn tests
(tests/integration/test_uvicorn.py, test_gunicorn.py, test_hypercorn.py).

`fastapi_app` and `starlette_app` expose the same routes:

  GET  /loop              the server's running loop and where aioring came from
  POST /echo              a JSON body back, with its keys counted and sorted
  GET  /items/{id}?q=     path and query parameters
  POST /upload            the size and SHA-256 of the request body
  GET  /download/{n}      n deterministic bytes (blob(n))
  GET  /stream/{n}        n chunks of a streaming response, a sleep between
  GET  /sleep/{ms}        answers after ms milliseconds (concurrency checks)
  WS   /ws                echoes text and bytes; "close" makes the server
                          close with code 4001, reason "bye"; "info" answers
                          the running loop's module
"""
import asyncio
import hashlib
import os
import sys

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute


def blob(n):
    """n bytes, the same on every call, not a repeated short pattern."""
    seed = hashlib.sha256(b"aioring").digest()
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:n])


def loop_info():
    aioring = sys.modules.get("aioring")
    return {
        "loop_module": type(asyncio.get_running_loop()).__module__,
        "loop_class": type(asyncio.get_running_loop()).__name__,
        "aioring_file": getattr(aioring, "__file__", None),
        "pid": os.getpid(),
    }


def echo_document(doc):
    return {"received": doc, "keys": sorted(doc), "count": len(doc)}


def upload_digest(body):
    return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


async def stream_chunks(n):
    for i in range(n):
        yield f"chunk {i}\n".encode() * 100
        await asyncio.sleep(0.005)


async def websocket_echo(ws):
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text == "close":
                await ws.close(code=4001, reason="bye")
                return
            if text == "info":
                await ws.send_json(loop_info())
            elif text is not None:
                await ws.send_text(text)
            else:
                await ws.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


# FastAPI ------------------------------------------------------------------

fastapi_app = FastAPI()


@fastapi_app.get("/loop")
async def fa_loop():
    return loop_info()


@fastapi_app.post("/echo")
async def fa_echo(request: Request):
    return echo_document(await request.json())


@fastapi_app.get("/items/{item_id}")
async def fa_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q, "double": item_id * 2}


@fastapi_app.post("/upload")
async def fa_upload(request: Request):
    return upload_digest(await request.body())


@fastapi_app.get("/download/{n}")
async def fa_download(n: int):
    return Response(blob(n), media_type="application/octet-stream")


@fastapi_app.get("/stream/{n}")
async def fa_stream(n: int):
    return StreamingResponse(stream_chunks(n), media_type="text/plain")


@fastapi_app.get("/sleep/{ms}")
async def fa_sleep(ms: int):
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@fastapi_app.websocket("/ws")
async def fa_ws(ws: WebSocket):
    await websocket_echo(ws)


# Starlette ----------------------------------------------------------------

async def st_loop(request):
    return JSONResponse(loop_info())


async def st_echo(request):
    return JSONResponse(echo_document(await request.json()))


async def st_item(request):
    item_id = int(request.path_params["item_id"])
    return JSONResponse({"item_id": item_id, "q": request.query_params.get("q"),
                         "double": item_id * 2})


async def st_upload(request):
    # Streamed in, as a large upload would be.
    h = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        h.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": h.hexdigest()})


async def st_download(request):
    return Response(blob(int(request.path_params["n"])),
                    media_type="application/octet-stream")


async def st_stream(request):
    return StreamingResponse(stream_chunks(int(request.path_params["n"])),
                             media_type="text/plain")


async def st_sleep(request):
    ms = int(request.path_params["ms"])
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"slept_ms": ms})


starlette_app = Starlette(routes=[
    Route("/loop", st_loop),
    Route("/echo", st_echo, methods=["POST"]),
    Route("/items/{item_id}", st_item),
    Route("/upload", st_upload, methods=["POST"]),
    Route("/download/{n}", st_download),
    Route("/stream/{n}", st_stream),
    Route("/sleep/{ms}", st_sleep),
    WebSocketRoute("/ws", websocket_echo),
])

APPS = {"fastapi": fastapi_app, "starlette": starlette_app}
