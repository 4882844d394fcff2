"""What a sweep is asked for (SweepSettings, stored in DIR/sweep.json) and what it reports while it
runs and at the end (SweepProgress, SweepEvent, SweepResult)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.errors import InputError
from charrnn.sweep.layout import TrialRecord
from charrnn.sweep.space import Dimension, parse_space
from charrnn.training.config import TrainConfig

DEFAULT_TRIALS = 8
DEFAULT_TRIAL_MINUTES = 5.0
DEFAULT_EVAL_EVERY = 500


@dataclass(frozen=True)
class SweepSettings:
    """What defines a sweep; stored in DIR/sweep.json and fixed across resumes."""

    space: dict = field(default_factory=dict)  # {setting: text as typed}; empty: the default space
    trials: int = DEFAULT_TRIALS
    trial_minutes: float | None = None  # budget of each trial (with neither: 5 minutes)
    trial_steps: int | None = None
    concurrent: int | None = None  # trials at once (None: as many as the CPUs fit)
    threads: int = 1  # threads (and Ray CPUs) of each trial
    eval_every: int = DEFAULT_EVAL_EVERY
    val_frac: float = 0.05
    seed: int = 0
    encoding: str = "utf-8"
    early_stop: bool = True

    def budget(self) -> dict:
        minutes = self.trial_minutes
        if minutes is None and self.trial_steps is None:
            minutes = DEFAULT_TRIAL_MINUTES
        return {"minutes": minutes, "steps": self.trial_steps}

    def fixed(self) -> dict:
        """The training settings every trial shares."""
        return {"eval_every": self.eval_every, "val_frac": self.val_frac, "seed": self.seed}

    def check(self) -> dict[str, Dimension]:
        """InputError (one line) for settings no sweep could use; the parsed space otherwise."""
        if not isinstance(self.trials, int) or self.trials < 1:
            raise InputError(f"--trials must be 1 or more, got {self.trials}")
        minutes = self.trial_minutes
        if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
            raise InputError(f"--trial-minutes must be positive, got {self.trial_minutes}")
        if self.trial_steps is not None and self.trial_steps < 1:
            raise InputError(f"--trial-steps must be 1 or more, got {self.trial_steps}")
        if self.concurrent is not None and self.concurrent < 1:
            raise InputError(f"--concurrent must be 1 or more, got {self.concurrent}")
        if self.threads < 1:
            raise InputError(f"--threads must be 1 or more, got {self.threads}")
        TrainConfig(**self.fixed()).check()
        try:
            "".encode(self.encoding)
        except LookupError:
            raise InputError(f"--encoding: unknown encoding {self.encoding!r}") from None
        return parse_space(self.space)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SweepSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SweepProgress:
    total: int
    finished: int = 0
    stopped: int = 0
    failed: int = 0
    running: int = 0
    best: TrialRecord | None = None
    elapsed: float = 0.0  # wall-clock seconds since the sweep started

    @property
    def done(self) -> int:
        return self.finished + self.stopped + self.failed


@dataclass(frozen=True)
class SweepEvent:
    """kind: "start" | "ray" | "note" | "trial_start" | "trial_end" | "progress" | "done";
    every event carries the progress so far, "trial_*" events the trial's record."""

    kind: str
    progress: SweepProgress
    record: TrialRecord | None = None
    text: str = ""


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    records: list  # TrialRecords, best first
    best: TrialRecord | None
    interrupted: bool  # some trials never finished: --resume continues them
    varied: tuple  # the settings the space varies (for tables)
