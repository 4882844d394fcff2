"""Training: its settings (config), the batches of a text (batches), the optimizers (optim),
validation (evaluate), a run opened and stepped (run), what it writes (saving), its progress
events (progress), and the loop that drives them (loop).

`charrnn.training.train(text_path, out_dir, overrides={...}, budget=Budget(minutes=10))` is the call
to use; names are imported when first used, so that reading a config does not compile the kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charrnn._lazy import lazy_attributes

_HOMES = {
    "train": "charrnn.training.loop",
    "Budget": "charrnn.training.config",
    "TrainConfig": "charrnn.training.config",
    "TrainEvent": "charrnn.training.config",
    "TrainResult": "charrnn.training.config",
    "CELL_DEFAULTS": "charrnn.training.config",
}

if TYPE_CHECKING:  # the same names, for type checkers (tests/test_typing.py keeps the two lists equal)
    from charrnn.training.config import CELL_DEFAULTS as CELL_DEFAULTS
    from charrnn.training.config import Budget as Budget
    from charrnn.training.config import TrainConfig as TrainConfig
    from charrnn.training.config import TrainEvent as TrainEvent
    from charrnn.training.config import TrainResult as TrainResult
    from charrnn.training.loop import train as train

__all__ = sorted(_HOMES)


__getattr__ = lazy_attributes(__name__, _HOMES)
