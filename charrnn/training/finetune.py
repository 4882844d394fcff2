"""Fine-tuning: a new run that starts from a trained model's weights (`charrnn train --init-from`).

The parent's cell, layers and hidden size carry over. The vocabulary is the union of the parent's
and the new text's (code-point order, as always), so the parent's characters move to new ids:
their rows of U.0, columns of V and entries of b_y move with them, unchanged. A character new to
the parent gets
  - a fresh row of U.0, drawn as a new model's (standard deviation `input_scale`): it only ever
    acts when that character is read, which the parent never did;
  - a zero column of V and an output bias NEW_CHAR_MARGIN nats below the parent's lowest one, so
    the model starts out predicting it rarely (at most about exp(-NEW_CHAR_MARGIN) of the parent's
    rarest character's odds), and the old characters' probabilities, renormalised over the old
    vocabulary, are exactly the parent's.
Everything else (the layers above, W, b, b_hn) is the parent's. The optimizer starts afresh.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from charrnn.errors import InputError
from charrnn.model.checkpoint import Model
from charrnn.model.params import Params
from charrnn.model.vocab import Vocab

NEW_CHAR_MARGIN = 6.0  # nats below the parent's lowest output bias
SHAPE_SETTINGS = ("cell", "layers", "hidden")


def load_parent(reference: str | Path) -> tuple[Model, dict]:
    """The parent model (a model directory or a bundled model's name) and the record meta.json
    keeps of it: what was given, where it was, its format and its best validation bpc."""
    from charrnn.model.checkpoint import load_model
    from charrnn.resources import bundled_model_names
    from charrnn.sampling import resolve_model_dir

    directory = resolve_model_dir(str(reference))
    model = load_model(directory)
    meta = model.meta
    bundled = str(reference) in bundled_model_names() and not Path(reference).exists()
    record = {
        "model": str(reference),
        "bundled": bundled,
        "path": str(directory.resolve()),
        "format_version": meta.get("format_version"),
        "best_val_bpc": meta.get("best_val_bpc"),
        "step": meta.get("step"),
        "corpus": (meta.get("corpus") or {}).get("name"),
    }
    return model, record


def carry_shape(parent: Model, overrides: dict) -> dict:
    """The settings of a run tuned from `parent`: its cell, layers and hidden size, which an
    explicit option may repeat but not change (InputError, one line)."""
    spec = parent.spec
    conflicts = [
        f"--{name} {overrides[name]}"
        for name in SHAPE_SETTINGS
        if name in overrides and overrides[name] != getattr(spec, name)
    ]
    if conflicts:
        raise InputError(
            f"--init-from keeps the model's shape ({spec.describe()}: --cell "
            f"{spec.cell} --layers {spec.layers} --hidden {spec.hidden}); drop "
            f"{', '.join(conflicts)}"
        )
    return {**overrides, **{name: getattr(spec, name) for name in SHAPE_SETTINGS}}


def union_vocab(parent: Vocab, text: Vocab) -> Vocab:
    return Vocab(tuple(sorted(set(parent.chars) | set(text.chars))))


def remap_ids(ids: np.ndarray, source: Vocab, target: Vocab) -> np.ndarray:
    """`ids` in `source` as ids in `target` (which must hold every character of `source`)."""
    missing = [c for c in source.chars if c not in target._index]
    if missing:
        shown = " ".join(repr(c) for c in missing[:10])
        raise InputError(f"the text has characters the run's vocabulary lacks: {shown}")
    table = np.array([target.index(c) for c in source.chars], dtype=np.int64)
    return table[ids].astype(target.dtype)


def widen_params(parent: Model, vocab: Vocab, params: Params) -> None:
    """Fill `params` (a fresh initialisation of the tuned model, over `vocab`) from the parent:
    every array but U.0, V and b_y as it is; those three for the parent's characters at their new
    positions; new characters keep their fresh U.0 row and get V's zero column and a low bias."""
    old = parent.params
    if (old.spec.cell, old.spec.layers, old.spec.hidden) != (params.spec.cell, params.spec.layers, params.spec.hidden):
        raise ValueError("the tuned model must have the parent's cell, layers and hidden size")
    positions = np.array([vocab.index(c) for c in parent.vocab.chars], dtype=np.int64)
    new = np.setdiff1d(np.arange(len(vocab)), positions)
    for name in params.names():
        if name not in ("U.0", "V", "b_y"):
            params[name][...] = old[name]
    params["U.0"][positions] = old["U.0"]
    params.V[:, positions] = old.V
    params.V[:, new] = 0.0
    params.b_y[positions] = old.b_y
    params.b_y[new] = float(old.b_y.min()) - NEW_CHAR_MARGIN


def new_chars(parent: Vocab, vocab: Vocab) -> list[str]:
    return [c for c in vocab.chars if c not in parent._index]


def describe(record: dict) -> str:
    """One line for `charrnn info`."""
    bpc = record.get("best_val_bpc")
    shown = f"{bpc:.4f} bpc" if isinstance(bpc, (int, float)) and math.isfinite(bpc) else "no bpc"
    where = "bundled" if record.get("bundled") else record.get("path", "?")
    return f"{record.get('model', '?')} ({where}; format {record.get('format_version', '?')}, best {shown})"


def start_note(parent: Model, vocab: Vocab) -> str:
    added = new_chars(parent.vocab, vocab)
    shown = "".join(added[:40]).replace("\n", "\\n").replace("\t", "\\t")
    return f"tuning from the parent's weights; {len(added)} character(s) new to it" + (
        f": {shown}{' ...' if len(added) > 40 else ''}" if added else ""
    )
