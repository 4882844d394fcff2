"""Hyperparameter sweeps on Ray Tune: many charrnn trainings over a search space, on one machine
or a cluster, with ASHA early stopping; each trial an ordinary model directory.

Importing this package imports nothing heavy (neither Ray nor the trainer: the sink actor's
process imports only what it uses); `run_sweep` imports Ray, and says what to install if it is
missing. See `charrnn sweep -h` and the README's "Sweeps" section.
"""

import importlib

_EXPORTS = {
    "TrialRecord": "layout",
    "INSTALL_HINT": "run", "RayMissing": "run", "SweepError": "run", "SweepEvent": "run",
    "SweepProgress": "run", "SweepResult": "run", "SweepSettings": "run", "require_ray": "run",
    "run_sweep": "run",
    "Dimension": "space", "parse_dimension": "space", "parse_space": "space",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"charrnn.sweep.{module}"), name)
