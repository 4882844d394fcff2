"""charrnn: a character-level RNN language model with a Numba-compiled core.

    charrnn.train("play.txt", "runs/play", budget=charrnn.Budget(minutes=10))
    charrnn.sample("runs/play", 200, prime="ROMEO:", seed=1)

The names below are imported when first used, so that `import charrnn` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.3.0"

_HOMES = {
    "train": "charrnn.training.loop", "Budget": "charrnn.training.config",
    "sample": "charrnn.sampling.api", "stream": "charrnn.sampling.api", "load": "charrnn.model.checkpoint",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
