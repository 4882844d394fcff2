"""Inside a model on a text: per-character surprisal, the model's guesses, and its units' activations.

Everything is measured the way `charrnn eval` measures it (charrnn.training.evaluate): batch 1, the state
carried from the first character to the last, no dropout; the forward pass is the training kernels'
(charrnn.kernels.window) over windows of SCORE_CHUNK characters, which keep every step's states
(eval's faster scoring pass keeps only the last), so the bits agree with eval's to rounding (about
1e-6). Row t of a result is character t of the text:
- bits[t] = -log2 p(text[t] | text[:t]), the surprisal (NaN for t = 0: the first character is only
  read, as in eval), so the mean of bits[1:] is eval's bits per character;
- the top-k guesses for position t (what the model expected there, before reading text[t]);
- the activations of a layer's units after reading text[t] (h, and c for the LSTM).

`find_units` ranks every unit of every layer by the correlation of its activation with a property
of the text (PROPERTIES: inside quotes, position in the line, inside parentheses), streaming, so a
long text needs memory for its ids only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from charrnn.errors import InputError

LN2 = math.log(2.0)
SCORE_CHUNK = 256  # characters per forward call (the state carried from call to call)
PREVIEW_WIDTH = 60  # characters of text in find_units' preview window


# ----------------------------------------------------------------------------------------------
# Text and option checks


def encode_for_scoring(text: str, vocab, unknown: str = "error") -> tuple[str, np.ndarray, dict]:
    """(the text scored, its ids (int32), {character: count} of those left out). unknown="error":
    InputError naming the characters outside the vocabulary; "skip": they are left out."""
    if unknown not in ("error", "skip"):
        raise InputError(f"unknown must be error or skip, got {unknown!r}")
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    outside = vocab.unknown(text)
    skipped: dict[str, int] = {}
    if outside:
        skipped = {c: text.count(c) for c in outside}
        if unknown == "error":
            shown = " ".join(repr(c) for c in outside[:10]) + (" ..." if len(outside) > 10 else "")
            raise InputError(
                f"{sum(skipped.values()):,} characters are not in the model's "
                f"vocabulary: {shown}; pass --unknown skip to leave them out"
            )
        dropped = set(outside)
        text = "".join(c for c in text if c not in dropped)
    if len(text) < 2:
        raise InputError("fewer than 2 characters the model knows; nothing to score")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = {ord(c): i for i, c in enumerate(vocab.chars)}
    lookup = np.zeros(max(table) + 1, dtype=np.int32)
    for code, i in table.items():
        lookup[code] = i
    return text, lookup[codes], skipped


def parse_units(units, hidden: int) -> list[int]:
    """Unit numbers from "all", None (all), a list of whole numbers, or a string like
    "0,5,10-20"; distinct, in the order given. InputError (one line) if one is off."""
    if units is None or units == "all":
        return list(range(hidden))
    if isinstance(units, str):
        chosen: list[int] = []
        for part in units.split(","):
            part = part.strip()
            lo, dash, hi = part.partition("-")
            try:
                first, last = (int(lo), int(hi)) if dash else (int(part), int(part))
            except ValueError:
                raise InputError(
                    f"units: {part!r} is not a unit number or a range like 10-20 (give e.g. 0,5,10-20)"
                ) from None
            if first > last:
                raise InputError(f"units: the range {part!r} runs backwards")
            chosen.extend(range(first, last + 1))
    elif isinstance(units, (list, tuple)):
        if not all(isinstance(u, (int, np.integer)) and not isinstance(u, bool) for u in units):
            raise InputError("units must be whole numbers")
        chosen = [int(u) for u in units]
    else:
        raise InputError(f'units must be "all", a list of unit numbers or a string like "0,5,10-20", got {units!r}')
    if not chosen:
        raise InputError("units: no unit given")
    bad = [u for u in chosen if not 0 <= u < hidden]
    if bad:
        raise InputError(f"units: {bad[0]} is not a unit of this model (units are 0 to {hidden - 1})")
    return list(dict.fromkeys(chosen))


def check_layer(layer, layers: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise InputError(f"layer must be a whole number, got {layer!r}")
    if not 0 <= layer < layers:
        raise InputError(
            f"layer {layer} is not a layer of this model (layers are 0 to {layers - 1}; 0 reads the characters)"
        )
    return int(layer)


def check_top(top, vocab_size: int) -> int:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise InputError(f"top must be a whole number, 0 or more, got {top!r}")
    return int(min(top, vocab_size))


# ----------------------------------------------------------------------------------------------
# The forward pass, window by window


class Scorer:
    """A model's forward pass over a text as eval runs it (batch 1, windows of SCORE_CHUNK, the
    state carried), keeping what eval throws away: each step's distribution and states. One call
    at a time per Scorer (it owns the kernels' buffers)."""

    def __init__(self, model):
        self.model = model
        self.spec = model.spec
        params = model.params
        self.params = params if params.dtype == np.float32 else params.astype(np.float32)
        from charrnn.kernels.window import Kernels  # late: it compiles or loads the kernels

        self.kernels = Kernels(self.spec, 1, SCORE_CHUNK, np.float32, threads=1)  # batch 1, no dropout
        self.V = np.ascontiguousarray(self.params.V)  # (H, vocab)
        self.b_y = np.ascontiguousarray(self.params.b_y)  # (vocab,)

    def windows(self, ids: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, T, logp): the window reading ids[start:start + T]; logp (T, vocab) float64 the
        log-probabilities of the next character after each step. After each yield,
        `self.kernels.layer_states(layer, T)` holds that window's states (until the next one)."""
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        n = ids.size
        if n < 1:
            raise InputError("nothing to score")
        targets = np.zeros(n, dtype=np.int32)  # the next character (the last step's is unused)
        targets[:-1] = ids[1:]
        state = np.zeros(self.spec.state_shape(1), dtype=np.float32)  # (1, L, K, H)
        last = self.spec.layers - 1
        for start in range(0, n, SCORE_CHUNK):
            T = min(SCORE_CHUNK, n - start)
            self.kernels.loss(self.params, ids[None, start : start + T], targets[None, start : start + T], state)
            state[...] = self.kernels.state_last
            h, _ = self.kernels.layer_states(last, T)  # (T, 1, H)
            logits = (h[:, 0, :] @ self.V + self.b_y).astype(np.float64)  # (T, vocab)
            peak = logits.max(axis=1, keepdims=True)
            logp = logits - (peak + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True)))
            yield start, T, logp


@dataclass
class Score:
    """Row t is character t of `text` (see the module's docstring)."""

    text: str
    ids: np.ndarray  # (n,) int32
    bits: np.ndarray  # (n,) float64, NaN at 0
    top_ids: np.ndarray  # (n, k) int64, -1 in row 0
    top_probs: np.ndarray  # (n, k) float64, NaN in row 0
    skipped: dict = field(default_factory=dict)
    layer: int | None = None
    units: list = field(default_factory=list)
    h: np.ndarray | None = None  # (n, len(units)) float32: h after reading each character
    c: np.ndarray | None = None  # the same for the LSTM's c, else None

    @property
    def bpc(self) -> float:
        return float(np.mean(self.bits[1:]))

    @property
    def chars(self) -> int:
        """Characters scored (the first is only read)."""
        return int(self.bits.size - 1)


def score_ids(
    scorer: Scorer, text: str, ids: np.ndarray, *, top: int = 5, layer=None, units=None, skipped: dict | None = None
) -> Score:
    """Per-character bits, top guesses and (if `layer` is given) activations of `units`."""
    spec = scorer.spec
    top = check_top(top, spec.vocab_size)
    chosen: list[int] = []
    if layer is not None:
        layer = check_layer(layer, spec.layers)
        chosen = parse_units(units, spec.hidden)
    n = ids.size
    bits = np.full(n, np.nan)
    top_ids = np.full((n, top), -1, dtype=np.int64)
    top_probs = np.full((n, top), np.nan)
    h_out = c_out = None
    if layer is not None:
        h_out = np.zeros((n, len(chosen)), dtype=np.float32)
        if spec.cell == "lstm":
            c_out = np.zeros((n, len(chosen)), dtype=np.float32)
    index = np.array(chosen, dtype=np.int64)
    for start, T, logp in scorer.windows(ids):
        rows = min(T, n - 1 - start)  # the steps that predict a character of the text
        if rows > 0:
            targets = ids[start + 1 : start + 1 + rows]
            bits[start + 1 : start + 1 + rows] = -logp[np.arange(rows), targets] / LN2
            if top:
                best = np.argpartition(-logp[:rows], top - 1, axis=1)[:, :top]  # (rows, k)
                best_logp = np.take_along_axis(logp[:rows], best, axis=1)
                order = np.argsort(-best_logp, axis=1, kind="stable")
                top_ids[start + 1 : start + 1 + rows] = np.take_along_axis(best, order, axis=1)
                top_probs[start + 1 : start + 1 + rows] = np.exp(np.take_along_axis(best_logp, order, axis=1))
        if layer is not None:
            h, c = scorer.kernels.layer_states(layer, T)
            assert h_out is not None
            h_out[start : start + T] = h[:, 0, index]
            if c_out is not None:
                c_out[start : start + T] = c[:, 0, index]
    return Score(text, ids, bits, top_ids, top_probs, dict(skipped or {}), layer, chosen, h_out, c_out)


def score_text(
    model, text: str, *, top: int = 5, unknown: str = "error", layer=None, units=None, scorer: Scorer | None = None
) -> Score:
    """A Model's per-character surprisal on `text` (see Score), e.g.
    `score_text(load("shakespeare-lstm"), "To be, or not to be", layer=1, units="0-9")`."""
    kept, ids, skipped = encode_for_scoring(text, model.vocab, unknown)
    return score_ids(scorer or Scorer(model), kept, ids, top=top, layer=layer, units=units, skipped=skipped)


# ----------------------------------------------------------------------------------------------
# Properties of a text, and the units that track them


def _in_quotes(text: str) -> np.ndarray:
    out = np.zeros(len(text))
    inside = False
    for i, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        elif ch == "\u201c":
            inside = True
        elif ch == "\u201d":
            inside = False
        out[i] = inside
    return out


def _in_parens(text: str) -> np.ndarray:
    out = np.zeros(len(text))
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        out[i] = depth > 0
    return out


def _line_position(text: str) -> np.ndarray:
    out = np.zeros(len(text))
    column = 0
    for i, ch in enumerate(text):
        column = 0 if ch == "\n" else column + 1
        out[i] = column
    return out


# name -> (value after reading each character, what it is)
PROPERTIES = {
    "in-quotes": (_in_quotes, 'inside "double quotes" (the opening quote counts as inside)'),
    "line-position": (_line_position, "characters since the last newline"),
    "in-parens": (_in_parens, "inside (parentheses), at any depth"),
}


def text_property(name: str, text: str) -> np.ndarray:
    """The property's value after reading each character of `text`, (n,) float64."""
    if name not in PROPERTIES:
        raise InputError(f"unknown property {name!r}; the properties are {', '.join(PROPERTIES)}")
    return PROPERTIES[name][0](text)


def preview_window(values: np.ndarray, width: int = PREVIEW_WIDTH) -> tuple[int, int]:
    """(start, stop) of the `width` characters where `values` vary the most (ties: the first)."""
    n = values.size
    if n <= width:
        return 0, n
    centred = values - values.mean()
    s1 = np.concatenate([[0.0], np.cumsum(centred)])
    s2 = np.concatenate([[0.0], np.cumsum(centred * centred)])
    sums, squares = s1[width:] - s1[:-width], s2[width:] - s2[:-width]
    variance = squares / width - (sums / width) ** 2
    start = int(np.argmax(variance + 1e-9 * (variance.size - np.arange(variance.size))))
    return start, start + width


@dataclass(frozen=True)
class UnitMatch:
    layer: int
    kind: str  # "h" or "c"
    unit: int
    r: float  # Pearson correlation with the property
    preview: np.ndarray  # its activation over the preview window

    @property
    def label(self) -> str:
        return f"{self.layer}:{self.unit} {self.kind}"


@dataclass(frozen=True)
class UnitSearch:
    property: str
    window: tuple[int, int]  # the preview's characters: text[start:stop]
    values: np.ndarray  # the property over the window
    matches: list  # UnitMatch, best |r| first


def find_units(scorer: Scorer, text: str, ids: np.ndarray, prop: str, count: int = 10) -> UnitSearch:
    """Every unit (h, and c for the LSTM, of every layer) ranked by |Pearson r| of its
    activation with property `prop` over the text; the best `count`."""
    values = text_property(prop, text)
    if values.size != ids.size:
        raise InputError("the text and its ids differ in length")
    centred = values - values.mean()
    spread = float(np.sqrt(np.sum(centred * centred)))
    if spread == 0.0:
        raise InputError(
            f"{prop} is the same all through this text ({PROPERTIES[prop][1]}); give a text where it changes"
        )
    spec = scorer.spec
    L, K, H = spec.layers, spec.state_kinds, spec.hidden
    sums = np.zeros((L, K, H))
    squares = np.zeros((L, K, H))
    cross = np.zeros((L, K, H))
    w0, w1 = preview_window(values)
    window = np.zeros((w1 - w0, L, K, H), dtype=np.float32)
    n = ids.size
    for start, T, _ in scorer.windows(ids):
        part = centred[start : start + T]
        lo, hi = max(w0, start), min(w1, start + T)
        for layer in range(L):
            states = scorer.kernels.layer_states(layer, T)
            for k in range(K):
                a = states[k][:, 0, :].astype(np.float64)  # (T, H)
                sums[layer, k] += a.sum(axis=0)
                squares[layer, k] += np.einsum("th,th->h", a, a)
                cross[layer, k] += part @ a
                if lo < hi:
                    window[lo - w0 : hi - w0, layer, k] = states[k][lo - start : hi - start, 0, :]
    variance = squares - sums * sums / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(variance > 1e-12 * n, cross / (np.sqrt(np.maximum(variance, 0.0)) * spread), 0.0)
    order = np.argsort(-np.abs(r), axis=None, kind="stable")[:count]
    kinds = "hc"
    matches = []
    for flat in order:
        layer, k, unit = np.unravel_index(flat, r.shape)
        matches.append(
            UnitMatch(int(layer), kinds[k], int(unit), float(r[layer, k, unit]), window[:, layer, k, unit].copy())
        )
    return UnitSearch(prop, (w0, w1), values[w0:w1], matches)
