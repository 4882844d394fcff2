"""Hyperparameter sweeps on Ray Tune: many charrnn trainings over a search space, on one machine
or a cluster, with ASHA early stopping; each trial an ordinary model directory.

Importing this package does not import Ray; `run_sweep` does, and says what to install if it is
missing. See `charrnn sweep -h` and the README's "Sweeps" section.
"""

from charrnn.sweep.layout import TrialRecord
from charrnn.sweep.run import (INSTALL_HINT, RayMissing, SweepError, SweepEvent, SweepProgress,
                               SweepResult, SweepSettings, require_ray, run_sweep)
from charrnn.sweep.space import Dimension, parse_dimension, parse_space

__all__ = ["Dimension", "INSTALL_HINT", "RayMissing", "SweepError", "SweepEvent", "SweepProgress",
           "SweepResult", "SweepSettings", "TrialRecord", "parse_dimension", "parse_space",
           "require_ray", "run_sweep"]
