"""What a training run is asked for: its settings (TrainConfig, with each cell's defaults), its
budget, and what it reports (TrainEvent, TrainResult)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from charrnn.errors import InputError
from charrnn.model.spec import CELLS, ModelSpec
from charrnn.training.optim import OPTIMIZERS

PROGRESS_SECONDS = 0.5  # how often a "step" event is sent
DEFAULT_MINUTES = 10.0  # the budget when none is given


# Defaults of each cell, chosen to learn well in 10 minutes on 2 cores (BENCHMARKS.md). Settings
# not named here share TrainConfig's defaults. The LSTM's dropout of 0.1 was as good as 0.25 on
# tiny-shakespeare (1.1 MB) and nearly as good as none on a 4.1 MB text, where 0.25 cost 0.02 bpc;
# the GRU kept 0.25, 0.025 bpc better than 0.1 on tiny-shakespeare.
CELL_DEFAULTS = {
    "rnn": {"layers": 1, "hidden": 1024, "dropout": 0.0, "lr": 2e-3, "input_lr_scale": 30.0},
    "lstm": {"layers": 2, "hidden": 512, "dropout": 0.1, "lr": 3e-3, "input_lr_scale": 10.0},
    "gru": {"layers": 2, "hidden": 512, "dropout": 0.25, "lr": 3e-3, "input_lr_scale": 10.0},
}


@dataclass(frozen=True)
class TrainConfig:
    """What defines a training run; stored in the model's metadata and fixed across resumes.
    (A run saved before cells existed has no cell, layers or dropout: see charrnn.model.legacy.)"""

    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    dropout: float = 0.1  # inverted dropout between layers and before the output layer
    seq_length: int = 64
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"
    clip: float = 5.0
    lr_schedule: str = "cosine"  # "cosine": decay to lr * min_lr_frac over the budget; "constant"
    min_lr_frac: float = 0.1
    input_scale: float = 0.5  # standard deviation of the initial U.0
    input_lr_scale: float = 10.0  # U.0's learning rate relative to the others (its rows are sparse)
    val_frac: float = 0.05
    eval_every: int = 1000
    seed: int = 0

    @classmethod
    def for_cell(cls, **settings) -> TrainConfig:
        """A config from the given settings, the rest from the cell's defaults (CELL_DEFAULTS)."""
        cell = settings.get("cell", cls.cell)
        if cell not in CELL_DEFAULTS:
            raise InputError(f"--cell must be one of {', '.join(CELLS)}, got {cell!r}")
        return cls(**{**CELL_DEFAULTS[cell], **settings})

    def spec(self, vocab_size: int) -> ModelSpec:
        return ModelSpec(self.cell, self.layers, self.hidden, vocab_size)

    def check(self) -> None:
        """InputError (one line) for values no run could use."""
        if self.cell not in CELL_DEFAULTS:
            raise InputError(f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        positive_ints = ("layers", "hidden", "seq_length", "batch_size", "eval_every")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a positive whole number, got {value}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.clip >= 0:
            raise InputError(f"--clip must be 0 (off) or positive, got {self.clip}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise InputError(f"--lr-schedule must be cosine or constant, got {self.lr_schedule!r}")
        if not 0 < self.min_lr_frac <= 1:
            raise InputError(f"min_lr_frac must be in (0, 1], got {self.min_lr_frac}")
        if not 0 < self.val_frac <= 0.5:
            raise InputError(f"--val-frac must be in (0, 0.5], got {self.val_frac}")
        if not self.input_scale > 0:
            raise InputError(f"input_scale must be positive, got {self.input_scale}")
        if not self.input_lr_scale > 0:
            raise InputError(f"input_lr_scale must be positive, got {self.input_lr_scale}")


@dataclass(frozen=True)
class Budget:
    """How long to train, counted over the whole run (a resumed run continues the same count).
    Training stops at whichever limit comes first; with none given, DEFAULT_MINUTES."""

    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None

    def check(self) -> None:
        for name in ("steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"--{name} must be positive, got {value}")


@dataclass(frozen=True)
class TrainEvent:
    """kind: "start" | "note" | "compiling" | "ready" | "step" | "eval" | "sample" | "saved" | "interrupted" |
    "scoring" | "done"."""

    kind: str
    step: int = 0
    total_steps: int | None = None
    epoch: float = 0.0
    train_loss: float | None = None  # nats per character, averaged since the last step event
    val_bpc: float | None = None
    best_val_bpc: float | None = None
    chars_per_sec: float | None = None
    elapsed: float = 0.0  # training seconds, over the whole run
    eta_seconds: float | None = None
    lr: float | None = None
    text: str = ""  # a sample, or a message
    val_seconds: float | None = None  # ("done") validation estimates within the budget
    final_val_seconds: float | None = None  # ("done") the best model's exact score, after it


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int
    best_val_bpc: float
    last_val_bpc: float | None
    elapsed: float
    interrupted: bool
    val_seconds: float = 0.0  # validation estimates, within `elapsed`
    final_val_seconds: float = 0.0  # the best model's exact score on the validation text, after it


def learning_rate(config: TrainConfig, progress: float) -> float:
    """Cosine decay from lr to lr * min_lr_frac as `progress` goes from 0 to 1."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(max(progress, 0.0), 1.0)
    floor = config.lr * config.min_lr_frac
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * progress))
