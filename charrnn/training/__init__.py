"""Training: its settings (config), the batches of a text (batches), the optimizers (optim),
validation (evaluate), and the loop that runs them and saves checkpoints (loop).

`charrnn.training.train(text_path, out_dir, overrides={...}, budget=Budget(minutes=10))` is the call
to use; names are imported when first used, so that reading a config does not compile the kernels.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "train": "charrnn.training.loop",
    "Budget": "charrnn.training.config", "TrainConfig": "charrnn.training.config",
    "TrainEvent": "charrnn.training.config", "TrainResult": "charrnn.training.config",
    "CELL_DEFAULTS": "charrnn.training.config",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'charrnn.training' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
