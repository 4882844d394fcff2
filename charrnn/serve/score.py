"""POST /api/score: per-character surprisal, guesses and activations (charrnn.analysis) as JSON.

    {"model", "text", "top", "unknown", "layer", "units", "packed"} (all but model and text optional)
    -> {"model", "text", "skipped", "chars", "bpc",
        "bits": [null, b1, ...],                   # one per character of "text"; the first is read
        "top": [[], [["e", 0.31], ...], ...],      # the model's guesses for each position
        "activations": {"layer", "units", "h": [[...] per unit], "c": [...] (LSTM)}}   # if layer

"text" in the answer is the text scored (without the characters "unknown": "skip" left out).
Activations are unit-major (h[i][t]: unit units[i] after reading character t). With "packed":
true, "h" is instead one base64 string of int8 values round(127 h) (h is in [-1, 1] for every
cell), unit after unit, with "scale": 127, and c is left out: what the playground's Analyse view
asks for, all units of a layer in a few bytes per character.
"""

from __future__ import annotations

import asyncio
import base64
import threading

import numpy as np

MAX_FLOAT_VALUES = 1_000_000  # activations sent as JSON numbers (units x characters)
PACK_SCALE = 127
FIELDS = ("model", "text", "top", "unknown", "layer", "units", "packed")
DEFAULTS = {"top": 5, "unknown": "error", "layer": None, "units": "all", "packed": False}


def _shown(value) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_score(data: dict, served, limits, api_error) -> dict:
    """The request's options past its model (`served`, checked by the app with its fields and
    name), checked; api_error(status, message) naming the first thing wrong."""
    from charrnn.analysis import encode_for_scoring, parse_units
    from charrnn.errors import InputError

    if "text" not in data:
        raise api_error(400, "the field 'text' is required (the text to score)")
    options = {**DEFAULTS, **data}
    text = options["text"]
    if not isinstance(text, str):
        raise api_error(400, f"text must be a string, got {_shown(text)}")
    if len(text) > limits.max_text:
        raise api_error(400, f"text has {len(text)} characters, over this server's limit of {limits.max_text}")
    spec = served.sampler.spec
    top = options["top"]
    if not _whole(top) or not 0 <= top <= spec.vocab_size:
        raise api_error(
            400, f"top must be a whole number from 0 to {spec.vocab_size} (the model's characters), got {_shown(top)}"
        )
    unknown = options["unknown"]
    if unknown not in ("error", "skip"):
        raise api_error(400, f'unknown must be "error" or "skip", got {_shown(unknown)}')
    layer = options["layer"]
    if layer is not None and (not _whole(layer) or not 0 <= layer < spec.layers):
        raise api_error(
            400,
            f"layer must be null or a whole number from 0 to {spec.layers - 1} "
            f"(0 reads the characters), got {_shown(layer)}",
        )
    packed = options["packed"]
    if not isinstance(packed, bool):
        raise api_error(400, f"packed must be true or false, got {_shown(packed)}")
    units = options["units"]
    if "units" in data and layer is None:
        raise api_error(400, 'units needs a layer: send "layer" too')
    chosen = []
    if layer is not None:
        try:
            chosen = parse_units(units, spec.hidden)
        except InputError as error:
            message = str(error)
            raise api_error(400, message if message.startswith("units") else f"units: {message}") from None
    try:
        kept, ids, skipped = encode_for_scoring(text, served.vocab, unknown)
    except InputError as error:
        hint = '; remove them, or send "unknown": "skip" to leave them out'
        message = str(error).replace("; pass --unknown skip to leave them out", hint)
        raise api_error(400, f"text: {message}") from None
    if layer is not None and not packed and len(chosen) * ids.size > MAX_FLOAT_VALUES:
        raise api_error(
            400,
            f"units: {len(chosen)} units x {ids.size} characters is over "
            f"{MAX_FLOAT_VALUES:,} values; ask for fewer units, or send "
            f'"packed": true',
        )
    return {
        "served": served,
        "text": kept,
        "ids": ids,
        "skipped": skipped,
        "top": top,
        "layer": layer,
        "units": chosen,
        "packed": packed,
    }


class Scorers:
    """One charrnn.analysis.Scorer per model, made when first asked for; a model scores one
    text at a time (its pass takes the sampler's threads), others wait their turn."""

    def __init__(self) -> None:
        self._scorers: dict = {}
        self._locks: dict = {}
        self._guard = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def run(self, checked: dict) -> dict:
        """The answer's JSON object (on a worker thread)."""
        from charrnn.analysis import Scorer, score_ids

        served = checked["served"]
        with self._lock(served.name):
            scorer = self._scorers.get(served.name)
            if scorer is None:
                scorer = self._scorers[served.name] = Scorer(served.model)
            result = score_ids(
                scorer,
                checked["text"],
                checked["ids"],
                top=checked["top"],
                layer=checked["layer"],
                units=checked["units"],
                skipped=checked["skipped"],
            )
        return answer(served.name, result, served.vocab, checked["packed"])

    async def score(self, checked: dict) -> dict:
        return await asyncio.to_thread(self.run, checked)


def answer(name: str, result, vocab, packed: bool) -> dict:
    bits = [None] + [round(float(b), 4) for b in result.bits[1:]]
    chars = vocab.chars
    top: list[list[list[object]]] = [[]]
    ids, probs = result.top_ids[1:].tolist(), np.round(result.top_probs[1:], 4).tolist()
    top += [
        [[chars[i], p] for i, p in zip(row_ids, row_p, strict=True)] for row_ids, row_p in zip(ids, probs, strict=True)
    ]
    data = {
        "model": name,
        "text": result.text,
        "skipped": result.skipped,
        "chars": result.chars,
        "bpc": round(result.bpc, 6),
        "bits": bits,
        "top": top,
    }
    if result.layer is not None:
        acts = {"layer": result.layer, "units": result.units}
        if packed:
            q = np.clip(np.rint(result.h.T * PACK_SCALE), -PACK_SCALE, PACK_SCALE).astype(np.int8)
            acts["h"] = base64.b64encode(np.ascontiguousarray(q).tobytes()).decode("ascii")
            acts["scale"] = PACK_SCALE
        else:
            acts["h"] = np.round(result.h.T.astype(np.float64), 4).tolist()
            if result.c is not None:
                acts["c"] = np.round(result.c.T.astype(np.float64), 4).tolist()
        data["activations"] = acts
    return data
