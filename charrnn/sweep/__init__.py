"""Hyperparameter sweeps on Ray Tune: many charrnn trainings over a search space, on one machine
or a cluster, with ASHA early stopping; each trial an ordinary model directory.

Importing this package imports nothing heavy (neither Ray nor the trainer: the sink actor's
process imports only what it uses); `run_sweep` imports Ray, and says what to install if it is
missing. See `charrnn sweep -h` and the README's "Sweeps" section.
"""

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "TrialRecord": "layout",
    "INSTALL_HINT": "ray_setup",
    "RayMissing": "ray_setup",
    "SweepError": "ray_setup",
    "SweepEvent": "settings",
    "SweepProgress": "settings",
    "SweepResult": "settings",
    "SweepSettings": "settings",
    "require_ray": "ray_setup",
    "run_sweep": "run",
    "Dimension": "space",
    "parse_dimension": "space",
    "parse_space": "space",
}

if TYPE_CHECKING:  # the same names, for type checkers (tests/test_typing.py keeps the two lists equal)
    from charrnn.sweep.layout import TrialRecord as TrialRecord
    from charrnn.sweep.ray_setup import INSTALL_HINT as INSTALL_HINT
    from charrnn.sweep.ray_setup import RayMissing as RayMissing
    from charrnn.sweep.ray_setup import SweepError as SweepError
    from charrnn.sweep.ray_setup import require_ray as require_ray
    from charrnn.sweep.run import run_sweep as run_sweep
    from charrnn.sweep.settings import SweepEvent as SweepEvent
    from charrnn.sweep.settings import SweepProgress as SweepProgress
    from charrnn.sweep.settings import SweepResult as SweepResult
    from charrnn.sweep.settings import SweepSettings as SweepSettings
    from charrnn.sweep.space import Dimension as Dimension
    from charrnn.sweep.space import parse_dimension as parse_dimension
    from charrnn.sweep.space import parse_space as parse_space
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"charrnn.sweep.{module}"), name)
