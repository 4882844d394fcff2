"""The checks every API request passes before anything runs: its body (size, time to arrive,
JSON), its fields and model, and /api/generate's options (GenerateRequest), against the server's
caps (Limits). Anything wrong is an ApiError naming the field at fault, which the app turns into
{"error": ...} with its status."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import TypeGuard

from starlette.requests import Request
from starlette.responses import JSONResponse

from charrnn.errors import InputError
from charrnn.jsontypes import JSONObject
from charrnn.sampling.options import SampleOptions, drop_unknown, unknown_prime_message
from charrnn.serve.jobs import INT64_MAX
from charrnn.serve.models import ServedModel

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


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


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


async def read_body_within(request: Request, limits: Limits) -> bytes:
    """The body, or ApiError 408 if the client takes longer than limits.body_seconds to send it."""
    try:
        return await asyncio.wait_for(read_body(request, limits.max_body), limits.body_seconds)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the body took longer than {limits.body_seconds:g} seconds to arrive") from None


def client_of(request: Request) -> str:
    """Who a request counts against: its remote address (behind a proxy, the proxy's)."""
    return request.client.host if request.client else "unknown"


async def read_body(request: Request, limit: int) -> bytes:
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


def check_content_type(request: Request) -> None:
    """ApiError 415 unless the body is declared as JSON."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "send the body as JSON with the header Content-Type: application/json")
