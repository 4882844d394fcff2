"""charrnn: a character-level RNN language model with a Numba-compiled core.

    charrnn.train("play.txt", "runs/play", budget=charrnn.Budget(minutes=10))
    charrnn.sample("runs/play", 200, prime="ROMEO:", seed=1)

The names below are imported when first used, so that `import charrnn` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charrnn._lazy import lazy_attributes

__version__ = "0.3.0"

_HOMES = {
    "train": "charrnn.training.loop",
    "Budget": "charrnn.training.config",
    "sample": "charrnn.sampling.api",
    "stream": "charrnn.sampling.api",
    "load": "charrnn.model.checkpoint",
}

if TYPE_CHECKING:  # the same names, for type checkers (tests/test_typing.py keeps the two lists equal)
    from charrnn.model.checkpoint import load as load
    from charrnn.sampling.api import sample as sample
    from charrnn.sampling.api import stream as stream
    from charrnn.training.config import Budget as Budget
    from charrnn.training.loop import train as train


__getattr__ = lazy_attributes(__name__, _HOMES)
