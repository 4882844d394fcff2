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
checked first (charrnn.serve.checks); generation runs in charrnn.serve.engine, relayed by
charrnn.serve.generation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources as importlib_resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from charrnn.errors import CharRNNError
from charrnn.serve.checks import (
    ApiError,
    Limits,
    check_content_type,
    check_generate,
    checked_model,
    client_of,
    error_response,
    parse_body,
    read_body,
    read_body_within,
)
from charrnn.serve.engine import Engine
from charrnn.serve.generation import GenerationResponse
from charrnn.serve.models import ServedModel
from charrnn.serve.score import FIELDS as SCORE_FIELDS
from charrnn.serve.score import Scorers, check_score

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]
log = logging.getLogger("charrnn.serve")

SECURITY_HEADERS = {
    # Everything the page uses comes from this server; nothing is fetched from anywhere else.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


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
                response = error_response(
                    400,
                    f"this server answers only to {', '.join(sorted(self.allowed))} "
                    f"(the request was for {host or 'no host'})",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _static_dir() -> Path:
    return Path(str(importlib_resources.files("charrnn.serve") / "static"))


class _Api:
    """The routes' handlers, over one app's models, engine and limits."""

    def __init__(self, models: list[ServedModel], limits: Limits, engine: Engine, index_html: bytes):
        self.by_name = {m.name: m for m in models}
        self.limits = limits
        self.engine = engine
        self.index_html = index_html
        self.listing = {"models": [m.info() for m in models]}
        self.scorers = Scorers()

    async def index(self, request: Request) -> Response:
        return Response(
            self.index_html,
            media_type="text/html; charset=utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def list_models(self, request: Request) -> Response:
        return JSONResponse(self.listing)

    async def generate(self, request: Request) -> Response | GenerationResponse:
        try:
            check_content_type(request)
            data = parse_body(await read_body_within(request, self.limits))
            checked = check_generate(data, self.by_name, self.limits)
        except ApiError as error:
            return error_response(error.status, error.message, error.headers)
        return GenerationResponse(self.engine, checked, client_of(request))

    async def score(self, request: Request) -> Response:
        try:
            check_content_type(request)
            data = parse_body(await read_body(request, self.limits.max_body))
            checked = check_score(data, checked_model(data, SCORE_FIELDS, self.by_name), self.limits, ApiError)
        except ApiError as error:
            return error_response(error.status, error.message, error.headers)
        return JSONResponse(await self.scorers.score(checked))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.engine.close()


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)  # the handler of HTTPException only
    messages = {
        404: f"nothing at {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return error_response(
        error.status_code, messages.get(error.status_code, str(error.detail)), getattr(error, "headers", None)
    )


async def _server_error(request: Request, error: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=(type(error), error, error.__traceback__))
    return error_response(500, "internal error (see the server's log)")


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
    if len({m.name for m in models}) != len(models):
        raise CharRNNError("two models have the same name")
    engine = engine or Engine(
        {m.name: m.sampler for m in models}, max_streams=limits.max_streams, max_per_client=limits.client_share()
    )
    static = _static_dir()
    api = _Api(models, limits, engine, (static / "index.html").read_bytes())
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(HostCheck, allowed=allowed_hosts))
    app = Starlette(
        routes=[
            Route("/", api.index, methods=["GET"]),
            Route("/api/models", api.list_models, methods=["GET"]),
            Route("/api/generate", api.generate, methods=["POST"]),
            Route("/api/score", api.score, methods=["POST"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=api.lifespan,
    )
    app.state.engine = engine
    app.state.models = list(models)
    app.state.limits = limits
    return app
