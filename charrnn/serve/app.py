"""The ASGI app behind `charrnn serve`: the page at `/`, its assets, and the JSON API.

    GET  /api/models    {"models": [{"name", "cell", "layers", "hidden", "vocab_size",
                                     "best_val_bpc"}, ...]}
    POST /api/generate  {"model", "prime", "length", "temperature", "top_k", "top_p", "seed",
                         "num", "unknown", "stream"} (all but "model" optional)
                        -> {"model", "seed", "texts": [...]}, each text starting with the prime;
                        with "stream": true, text/event-stream: `data: {"index": i, "text": ...}`
                        events, then `event: end` (data {"model", "seed"}), or `event: error`
                        (data {"error"}) if the server stopped the generation.
    POST /api/score     {"model", "text", "top", "unknown", "layer", "units", "packed"}
                        -> per-character bits, guesses and activations (charrnn.serve.score)
    Errors: {"error": "<what was wrong>"} with a 4xx status, naming the field at fault; 429 with
    Retry-After when the server, or this client's share of it, is full; 408 for a body that takes
    too long; 5xx only while shutting down or if generation itself failed (a generic message to the
    client, the detail in the server's log "charrnn.serve").

A client is its remote address: behind a reverse proxy every request comes from the proxy's
address and they all share one client's share (see the README's Serve section).

Models are offered by name only: a client never sends a path. Every request's options are
checked here; generation runs in charrnn.serve.engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path
from typing import TypeGuard

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from charrnn.errors import CharRNNError, InputError
from charrnn.jsontypes import JSONObject
from charrnn.sampling.options import SampleOptions, drop_unknown, unknown_prime_message
from charrnn.serve.engine import INT64_MAX, Engine, EngineBusy, EngineClosed, make_job
from charrnn.serve.models import ServedModel
from charrnn.serve.score import FIELDS as SCORE_FIELDS
from charrnn.serve.score import Scorers, check_score

# charrnn sample's defaults (charrnn.sampling.options), for fields a request leaves out.
_SAMPLE = SampleOptions()
DEFAULTS = {
    "prime": "",
    "length": _SAMPLE.length,
    "temperature": _SAMPLE.temperature,
    "top_k": _SAMPLE.top_k,
    "top_p": _SAMPLE.top_p,
    "seed": None,
    "num": 1,
    "unknown": "error",
    "stream": False,
}
FIELDS = ("model", *DEFAULTS)
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]
log = logging.getLogger("charrnn.serve")

SECURITY_HEADERS = {
    # Everything the page uses comes from this server; nothing is fetched from anywhere else.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Limits:
    """The server's caps (`charrnn serve --max-...`)."""

    max_length: int = 2000  # characters per sample
    max_num: int = 8  # samples per request
    max_prime: int = 2000  # characters of prime (the worker reads it before the batch)
    max_body: int = 65536  # bytes of request body
    max_streams: int = 64  # samples generating at once, over every client and model
    max_text: int = 20000  # characters of text per /api/score request
    max_per_client: int | None = None  # ... of which one client (remote address) may hold;
    # None: a quarter of max_streams, and at least max_num
    body_seconds: float = 10.0  # time a client has to send its whole body

    def client_share(self) -> int:
        if self.max_per_client is not None:
            return self.max_per_client
        return min(self.max_streams, max(self.max_num, self.max_streams // 4))


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# ----------------------------------------------------------------------------------------------
# Checking a request


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):  # NaN, or a lone surrogate: escaped
        text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _not_text(value: str) -> bool:
    """A string JSON can carry but UTF-8 cannot: it holds a lone surrogate (e.g. "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(data: JSONObject) -> None:
    """ApiError naming the first field whose name or string value is not text."""
    for key, value in data.items():
        if _not_text(key):
            raise ApiError(400, f"a field's name is not text (it holds a lone surrogate: {json.dumps(key)[:40]})")
        if isinstance(value, str) and _not_text(value):
            raise ApiError(400, f"{key} is not text (it holds a lone surrogate)")


@dataclass(frozen=True)
class GenerateRequest:
    model: ServedModel
    prime: str
    length: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    num: int
    stream: bool


def parse_body(body: bytes) -> JSONObject:
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as error:
        raise ApiError(400, f"the body is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ApiError(400, 'the body must be a JSON object, e.g. {"model": "shakespeare"}')
    return data


def checked_model(data: JSONObject, fields: tuple[str, ...], models: dict[str, ServedModel]) -> ServedModel:
    """What every request checks first: text only, known fields, and a model this server has."""
    _check_text(data)
    unknown_fields = [key for key in data if key not in fields]
    if unknown_fields:
        raise ApiError(400, f"unknown field {unknown_fields[0]!r}; the fields are {', '.join(fields)}")
    if "model" not in data:
        raise ApiError(400, f"the field 'model' is required (one of: {', '.join(models)})")
    name = data["model"]
    if not isinstance(name, str):
        raise ApiError(400, f"model must be a model's name (a string), got {_shown(name)}")
    model = models.get(name)
    if model is None:
        raise ApiError(404, f"no model named {_shown(name)} here; this server has: {', '.join(models)}")
    return model


def check_generate(data: JSONObject, models: dict[str, ServedModel], limits: Limits) -> GenerateRequest:
    """The request's options, checked; ApiError naming the first thing wrong."""
    model = checked_model(data, FIELDS, models)
    options = {**DEFAULTS, **{k: v for k, v in data.items() if k != "model"}}

    prime = options["prime"]
    if not isinstance(prime, str):
        raise ApiError(400, f"prime must be a string, got {_shown(prime)}")
    try:
        checked = SampleOptions(
            options["length"], options["temperature"], options["top_k"], options["top_p"], seed=options["seed"]
        ).check()
    except InputError as error:
        raise ApiError(400, str(error)) from None
    if checked.length > limits.max_length:
        raise ApiError(400, f"length {checked.length} is over this server's limit of {limits.max_length} characters")
    seed = secrets.randbits(32) if checked.seed is None else checked.seed
    # top_k at or past the vocabulary's size is off: the same as its size.
    top_k = min(checked.top_k, len(model.vocab), INT64_MAX)
    num = options["num"]
    if not _whole(num) or num < 1:
        raise ApiError(400, f"num must be a whole number, 1 or more, got {_shown(num)}")
    if num > limits.max_num:
        raise ApiError(400, f"num {num} is over this server's limit of {limits.max_num} samples per request")
    unknown = options["unknown"]
    if unknown not in ("error", "skip"):
        raise ApiError(400, f'unknown must be "error" or "skip", got {_shown(unknown)}')
    stream = options["stream"]
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {_shown(stream)}")

    problem = unknown_prime_message(model.vocab, prime)
    if problem is not None:
        if unknown == "error":
            raise ApiError(400, f'{problem}; remove them, or send "unknown": "skip" to drop them')
        prime, _ = drop_unknown(model.vocab, prime)
    if len(prime) > limits.max_prime:
        raise ApiError(400, f"the prime has {len(prime)} characters, over this server's limit of {limits.max_prime}")
    return GenerateRequest(model, prime, checked.length, checked.temperature, top_k, checked.top_p, seed, num, stream)


# ----------------------------------------------------------------------------------------------
# Running a generation as an HTTP response

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
            await _error(429, str(error), {"Retry-After": "1"})(scope, receive, send)
            return
        except EngineClosed as error:
            await _error(503, str(error))(scope, receive, send)
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
                response = _error(503, str(item))
            else:  # GenerationFailed: a generic message
                response = _error(500, str(item))
            await response(scope, receive, send)
            return


# ----------------------------------------------------------------------------------------------
# The app


async def _read_body_within(request: Request, limits: Limits) -> bytes:
    """The body, or ApiError 408 if the client takes longer than limits.body_seconds to send it."""
    try:
        return await asyncio.wait_for(_read_body(request, limits.max_body), limits.body_seconds)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the body took longer than {limits.body_seconds:g} seconds to arrive") from None


def client_of(request: Request) -> str:
    """Who a request counts against: its remote address (behind a proxy, the proxy's)."""
    return request.client.host if request.client else "unknown"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared)} bytes, over this server's limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _host_name(header: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "::1", "a:80" -> "a"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Refuses requests whose Host header is not one of `allowed` (JSON 400): a page elsewhere
    that points its own name at 127.0.0.1 (DNS rebinding) cannot use a loopback server."""

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app = app
        self.allowed = {_host_name(name) for name in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            host = _host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                response = _error(
                    400,
                    f"this server answers only to {', '.join(sorted(self.allowed))} "
                    f"(the request was for {host or 'no host'})",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _static_dir() -> Path:
    return Path(str(importlib_resources.files("charrnn.serve") / "static"))


def create_app(
    models: list[ServedModel],
    limits: Limits = Limits(),
    *,
    allowed_hosts: list[str] | None = None,
    engine: Engine | None = None,
) -> Starlette:
    """The app serving `models` (each already loaded). `allowed_hosts`: the Host headers
    accepted (None: any); a server on the loopback interface accepts only loopback names, so
    that a web page elsewhere cannot reach it through DNS rebinding."""
    by_name = {m.name: m for m in models}
    if len(by_name) != len(models):
        raise CharRNNError("two models have the same name")
    engine = engine or Engine(
        {m.name: m.sampler for m in models}, max_streams=limits.max_streams, max_per_client=limits.client_share()
    )
    static = _static_dir()
    index_html = (static / "index.html").read_bytes()
    listing = {"models": [m.info() for m in models]}
    scorers = Scorers()

    async def index(request: Request) -> Response:
        return Response(
            index_html, media_type="text/html; charset=utf-8", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        )

    async def list_models(request: Request) -> Response:
        return JSONResponse(listing)

    async def generate(request: Request) -> Response | GenerationResponse:
        try:
            content_type = request.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise ApiError(415, "send the body as JSON with the header Content-Type: application/json")
            data = parse_body(await _read_body_within(request, limits))
            checked = check_generate(data, by_name, limits)
        except ApiError as error:
            return _error(error.status, error.message, error.headers)
        return GenerationResponse(engine, checked, client_of(request))

    async def score(request: Request) -> Response:
        try:
            content_type = request.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise ApiError(415, "send the body as JSON with the header Content-Type: application/json")
            data = parse_body(await _read_body(request, limits.max_body))
            checked = check_score(data, checked_model(data, SCORE_FIELDS, by_name), limits, ApiError)
        except ApiError as error:
            return _error(error.status, error.message, error.headers)
        return JSONResponse(await scorers.score(checked))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)  # the handler of HTTPException only
        messages = {
            404: f"nothing at {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return _error(
            error.status_code, messages.get(error.status_code, str(error.detail)), getattr(error, "headers", None)
        )

    async def server_error(request: Request, error: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=(type(error), error, error.__traceback__))
        return _error(500, "internal error (see the server's log)")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        engine.close()

    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(HostCheck, allowed=allowed_hosts))
    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/models", list_models, methods=["GET"]),
            Route("/api/generate", generate, methods=["POST"]),
            Route("/api/score", score, methods=["POST"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.models = list(models)
    app.state.limits = limits
    return app
