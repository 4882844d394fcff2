"""The models a server offers, by name: the bundled ones, or a directory's name for each given."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from charrnn.errors import InputError

if TYPE_CHECKING:
    from charrnn.model.checkpoint import Model
    from charrnn.sampling.batch import BatchSampler


@dataclass(frozen=True)
class ServedModel:
    name: str
    directory: Path
    meta: dict
    sampler: BatchSampler
    model: Model | None = None  # what /api/score reads

    @property
    def vocab(self):
        return self.sampler.vocab

    def info(self) -> dict:
        """The model's entry in GET /api/models. The shape comes from the loaded model (checked),
        not from meta.json as written; best_val_bpc only when it is a finite number (a meta.json
        holding NaN or a string gives null), so the listing is always valid JSON."""
        spec = self.sampler.spec
        bpc = self.meta.get("best_val_bpc")
        finite = isinstance(bpc, (int, float)) and not isinstance(bpc, bool) and math.isfinite(bpc)
        return {
            "name": self.name,
            "cell": spec.cell,
            "layers": spec.layers,
            "hidden": spec.hidden,
            "vocab_size": spec.vocab_size,
            "best_val_bpc": float(bpc) if finite and bpc is not None else None,
        }


def model_directories(model_dirs) -> list[tuple[str, Path]]:
    """(name, directory) of each model to serve: each of `model_dirs` under its directory's name,
    or, with none given, every bundled model under its own name."""
    from charrnn.resources import bundled_model_dir, bundled_model_names

    if not model_dirs:
        found = [(name, bundled_model_dir(name)) for name in bundled_model_names()]
        if not found:
            raise InputError(
                "this installation of charrnn has no bundled model; give a model directory made by `charrnn train`"
            )
        return found
    found = []
    seen: dict[str, str] = {}
    for given in model_dirs:
        directory = Path(given)
        name = Path(os.path.abspath(directory)).name or str(directory)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"{os.fsencode(given)!r}: a model's directory name must be UTF-8 text, as clients see it by that name"
            ) from None
        if name in seen:
            raise InputError(
                f"{seen[name]} and {os.fspath(given)} would both be served as "
                f"{name!r}; give models whose directories have different names"
            )
        seen[name] = os.fspath(given)
        found.append((name, directory))
    return found


def load_served(name: str, directory: Path) -> ServedModel:
    """Load a model and make its sampler, with the kernels compiled (or read from Numba's cache)
    by one tiny draw, so the first request does not pay for it."""
    from charrnn.sampling import BatchSampler, load

    model = load(directory)
    sampler = BatchSampler(model)
    states = sampler.new_states(1)
    sampler.read(states, 0, np.zeros(1, dtype=np.int64))
    sampler.draw(
        states,
        np.zeros((1, 1)),
        np.ones(1),
        np.zeros(1, dtype=np.int64),
        np.ones(1),
        np.zeros(1, dtype=np.bool_),
        np.empty((1, 1), dtype=np.int64),
    )
    return ServedModel(name, directory, dict(model.meta), sampler, model)
