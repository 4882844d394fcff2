"""Format 1 (charrnn 0.1): a one-layer vanilla RNN whose arrays were named U, W, b_h, V, b_y and laid
out in that order in one flat buffer. Read, resumed and never written: every other module sees such a
model in today's layout, through the functions here."""

from __future__ import annotations

import numpy as np

from charrnn.model.params import Params
from charrnn.model.spec import ModelSpec

FORMAT1_NAMES = {"U": "U.0", "W": "W.0", "b_h": "b.0", "V": "V", "b_y": "b_y"}  # old -> new
# What a format-1 run's saved config leaves out: it predates cells, depth and dropout.
FORMAT1_CONFIG = {"cell": "rnn", "layers": 1, "dropout": 0.0}


def format1_meta(meta: dict) -> dict:
    """A format-1 meta.json with the fields today's readers expect."""
    return {**meta, "cell": "rnn", "layers": 1} if meta.get("format_version") == 1 else meta


def format1_params(arrays: dict[str, np.ndarray], dtype=np.float32) -> Params:
    """A format-1 model's arrays in today's layout; ValueError if they are not one."""
    missing = [n for n in FORMAT1_NAMES if n not in arrays]
    if missing:
        raise ValueError(f"missing arrays: {', '.join(missing)}")
    if arrays["U"].ndim != 2:
        raise ValueError(f"U has shape {arrays['U'].shape}, expected (vocab, hidden)")
    vocab_size, hidden = (int(n) for n in arrays["U"].shape)
    spec = ModelSpec("rnn", 1, hidden, vocab_size)
    return Params.from_arrays(spec, {new: arrays[old] for old, new in FORMAT1_NAMES.items()}, dtype)


def format1_flat_order(spec: ModelSpec) -> np.ndarray:
    """Indices that put a format-1 flat buffer (a one-layer vanilla RNN's U, W, V, b_h, b_y, in
    that order: charrnn 0.1's training states and optimizer moments) into this layout's order."""
    V, H = spec.vocab_size, spec.hidden
    starts, position = {}, 0
    for name, size in (("U", V * H), ("W", H * H), ("V", H * V), ("b_h", H), ("b_y", V)):
        starts[name] = position
        position += size
    offsets = spec.offsets()
    order = np.empty(spec.n_params, dtype=np.int64)  # (n_params,)
    for old, new in FORMAT1_NAMES.items():
        start, stop = offsets[new]
        order[start:stop] = np.arange(starts[old], starts[old] + stop - start)
    return order


def is_format1_state(arrays: dict[str, np.ndarray]) -> bool:
    """Whether a training state's arrays were saved by charrnn 0.1 (it kept a (B, H) "hidden")."""
    return "hidden" in arrays


def format1_state(arrays: dict[str, np.ndarray], spec: ModelSpec, state_shape: tuple) -> dict:
    """A charrnn 0.1 training state (flat U, W, V, b_h, b_y; optimizer moments in that order; a
    (B, H) "hidden") in this layout; ValueError if the run is not a one-layer vanilla RNN."""
    if spec.cell != "rnn" or spec.layers != 1:
        raise ValueError("a format-1 training state holds a one-layer vanilla RNN")
    order = format1_flat_order(spec)
    converted = {
        name: (a[order] if name == "params" or name.startswith("opt_") else a)
        for name, a in arrays.items()
        if name != "hidden"
    }
    converted["state"] = arrays["hidden"].reshape(state_shape)
    return converted
