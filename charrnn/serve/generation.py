"""A checked /api/generate request run as its HTTP response: the job submitted to the engine when
the response starts, its text relayed as it comes (whole, as JSON, or streamed as server-sent
events), and the job cancelled if the client goes away."""

from __future__ import annotations

import asyncio
import json

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from charrnn.jsontypes import JSONObject
from charrnn.serve.checks import GenerateRequest, error_response
from charrnn.serve.engine import Engine
from charrnn.serve.jobs import EngineBusy, EngineClosed, make_job

_DISCONNECTED = object()


def _sse(data: JSONObject, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class GenerationResponse:
    """Submits the job when the response starts, relays its text, and cancels it if the client
    goes away (an http.disconnect, or a send that fails)."""

    def __init__(self, engine: Engine, request: GenerateRequest, client: str | None = None):
        self.engine = engine
        self.request = request
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        # The engine's items (a list of new pieces, then None or an error), or _DISCONNECTED.
        queue: asyncio.Queue[object] = asyncio.Queue()

        def sink(item: object) -> None:  # on the worker thread
            loop.call_soon_threadsafe(queue.put_nowait, item)

        r = self.request
        job = make_job(
            r.model.vocab.encode(r.prime),
            r.length,
            r.num,
            temperature=r.temperature,
            top_k=r.top_k,
            top_p=r.top_p,
            seed=r.seed,
            sink=sink,
        )
        try:
            self.engine.submit(r.model.name, job, self.client)
        except EngineBusy as error:
            await error_response(429, str(error), {"Retry-After": "1"})(scope, receive, send)
            return
        except EngineClosed as error:
            await error_response(503, str(error))(scope, receive, send)
            return

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    job.cancel()
                    queue.put_nowait(_DISCONNECTED)
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            if r.stream:
                await self._stream(queue, send)
            else:
                await self._whole(queue, scope, receive, send)
        except OSError:  # the client went away while we wrote (uvicorn's ClientDisconnected)
            pass
        finally:
            job.cancel()  # a no-op once the job has ended
            watcher.cancel()

    async def _stream(self, queue: asyncio.Queue[object], send: Send) -> None:
        r = self.request
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        if r.prime:
            first = "".join(_sse({"index": i, "text": r.prime}) for i in range(r.num))
            await send({"type": "http.response.body", "body": first.encode(), "more_body": True})
        while True:
            items = [await queue.get()]
            while not queue.empty():  # coalesce what piled up while we were writing
                items.append(queue.get_nowait())
            pending = [""] * r.num
            ending = None
            for item in items:
                if item is _DISCONNECTED:
                    return
                if isinstance(item, list):
                    for i, piece in enumerate(item):
                        pending[i] += piece
                else:
                    ending = item if item is not None else "end"
                    break
            body = "".join(_sse({"index": i, "text": text}) for i, text in enumerate(pending) if text)
            if ending == "end":
                body += _sse({"model": r.model.name, "seed": r.seed}, "end")
            elif ending is not None:
                body += _sse({"error": str(ending)}, "error")
            if body:
                await send({"type": "http.response.body", "body": body.encode(), "more_body": ending is None})
            if ending is not None:
                return

    async def _whole(self, queue: asyncio.Queue[object], scope: Scope, receive: Receive, send: Send) -> None:
        r = self.request
        texts = [r.prime] * r.num
        while True:
            item = await queue.get()
            if item is _DISCONNECTED:
                return
            if isinstance(item, list):
                for i, piece in enumerate(item):
                    texts[i] += piece
                continue
            if item is None:
                response = JSONResponse({"model": r.model.name, "seed": r.seed, "texts": texts})
            elif isinstance(item, EngineClosed):
                response = error_response(503, str(item))
            else:  # GenerationFailed: a generic message
                response = error_response(500, str(item))
            await response(scope, receive, send)
            return
