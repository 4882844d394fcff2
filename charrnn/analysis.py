"""Inside a model on a text: per-character surprisal, the model's guesses, and its units' activations.

Everything is measured the way `charrnn eval` measures it (charrnn.training.evaluate): batch 1, the state
carried from the first character to the last, no dropout, by the same pass, the sampler's scoring pass
(charrnn.sampling.batch.BatchSampler.score), asked to keep each step's logits and states as well, over
windows of SCORE_CHUNK characters: so each character's bits are eval's, to the last bit. Row t of a
result is character t of the text:
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
SCORE_CHUNK = 256  # characters per scoring call (the state carried from call to call)
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


@dataclass(frozen=True)
class Window:
    """Steps [start, start + T) of a Scorer's pass, step t reading ids[t]; after each step:
    log_probs (T,) float64, the natural log of the probability of the next character (the last
    step of the text has none: its entry is meaningless), as eval sums them; logits (T, vocab)
    float32, h V + b_y, or None; states (T, L, K, H) float32, every layer's state, or None."""

    start: int
    T: int
    log_probs: np.ndarray
    logits: np.ndarray | None
    states: np.ndarray | None

    def log_softmax(self, rows: int) -> np.ndarray:
        """(rows, vocab) float64: the log-probabilities of every next character after the first
        `rows` steps."""
        assert self.logits is not None
        z = self.logits[:rows].astype(np.float64)
        peak = z.max(axis=1, keepdims=True)
        return z - (peak + np.log(np.exp(z - peak).sum(axis=1, keepdims=True)))


class Scorer:
    """A model's forward pass over a text as eval runs it (batch 1, the state carried from the
    first character to the last, no dropout): the sampler's scoring pass (BatchSampler.score, on
    the threads it would use), asked to keep what eval throws away: each step's logits and
    states. Windows of SCORE_CHUNK characters bound the memory they take; each call of `windows`
    starts from a zero state of its own."""

    def __init__(self, model, threads: int | None = None):
        from charrnn.sampling.batch import BatchSampler  # late: it loads the compiled sampler

        self.model = model
        self.spec = model.spec
        params = model.params
        params = params if params.dtype == np.float32 else params.astype(np.float32)
        self.sampler = BatchSampler(params, model.vocab, threads=threads)

    def windows(self, ids: np.ndarray, *, logits: bool = True, states: bool = False) -> Iterator[Window]:
        """The Windows reading ids[start:start + T], start = 0, SCORE_CHUNK, ... (see Window);
        `logits` and `states` say whether each one keeps its logits and its states."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        n = ids.size
        if n < 1:
            raise InputError("nothing to score")
        if ids.min() < 0 or ids.max() >= self.spec.vocab_size:
            raise InputError("character ids outside the vocabulary")
        targets = np.zeros(n, dtype=np.int64)  # the next character (the last step's is unused)
        targets[:-1] = ids[1:]
        sampler = self.sampler
        state = sampler.new_states(1)  # (1, L, K, H)
        for start in range(0, n, SCORE_CHUNK):
            T = min(SCORE_CHUNK, n - start)
            log_probs = np.empty((1, T))  # (1, T) float64
            kept_logits = np.empty((1, T, self.spec.vocab_size), dtype=np.float32) if logits else None
            record = np.empty((1, T, *state.shape[1:]), dtype=np.float32) if states else None  # (1, T, L, K, H)
            sampler.score(
                state,
                np.ascontiguousarray(ids[None, start : start + T]),
                np.ascontiguousarray(targets[None, start : start + T]),
                log_probs,
                logits=kept_logits,
                record=record,
            )
            yield Window(
                start,
                T,
                log_probs[0],
                None if kept_logits is None else kept_logits[0],
                None if record is None else record[0],
            )


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
    for window in scorer.windows(ids, logits=top > 0, states=layer is not None):
        start, T = window.start, window.T
        rows = min(T, n - 1 - start)  # the steps that predict a character of the text
        if rows > 0:
            bits[start + 1 : start + 1 + rows] = window.log_probs[:rows] / -LN2
            if top:
                logp = window.log_softmax(rows)  # (rows, vocab)
                best = np.argpartition(-logp, top - 1, axis=1)[:, :top]  # (rows, k)
                best_logp = np.take_along_axis(logp, best, axis=1)
                order = np.argsort(-best_logp, axis=1, kind="stable")
                top_ids[start + 1 : start + 1 + rows] = np.take_along_axis(best, order, axis=1)
                top_probs[start + 1 : start + 1 + rows] = np.exp(np.take_along_axis(best_logp, order, axis=1))
        if h_out is not None:
            assert window.states is not None
            h_out[start : start + T] = window.states[:, layer, 0][:, index]
            if c_out is not None:
                c_out[start : start + T] = window.states[:, layer, spec.state_kinds - 1][:, index]
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
    for step in scorer.windows(ids, logits=False, states=True):
        start, T = step.start, step.T
        assert step.states is not None
        a = step.states.reshape(T, L * K * H).astype(np.float64)  # (T, L*K*H)
        sums += a.sum(axis=0).reshape(L, K, H)
        squares += np.einsum("tu,tu->u", a, a).reshape(L, K, H)
        cross += (centred[start : start + T] @ a).reshape(L, K, H)
        lo, hi = max(w0, start), min(w1, start + T)
        if lo < hi:
            window[lo - w0 : hi - w0] = step.states[lo - start : hi - start]
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
