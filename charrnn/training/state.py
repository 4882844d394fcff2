"""What a run needs to resume exactly, as one object: TrainingState.

training_state.npz (charrnn.model.checkpoint writes and reads the file) holds the arrays (the last
weights, the carried state, the optimizer's moments) and a JSON record (the counters, the random
generators' states, the settings, the text). The training loop builds a TrainingState to save and
gets one back to resume; nothing else spells out the record's fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.model import checkpoint


@dataclass
class TrainingState:
    arrays: dict[str, np.ndarray]  # params (n,), state (B, L, K, H), the optimizer's opt_* (n,)
    step: int
    elapsed: float  # training seconds, over the whole run
    best_val_bpc: float  # math.inf before the first validation
    optimizer_steps: int
    rng_state: dict[str, Any]  # the training generator's bit_generator.state
    config: dict[str, Any]  # TrainConfig's fields
    corpus: dict[str, Any]  # name, path, bytes, sha256
    vocab: list[str]
    budget: dict[str, Any]  # Budget's fields
    encoding: str | None = None  # the text's (older runs: none recorded)
    sample_rng_state: dict[str, Any] | None = None  # the samples' generator (older runs: none)
    threads: int | None = None  # the threads it ran on (rounding depends on them)
    steps_per_epoch: int | None = None
    auto_choice: dict[str, Any] | None = None  # charrnn.training.auto's record, if it chose the model
    parent: dict[str, Any] | None = None  # charrnn.training.finetune's record, if fine-tuned
    extra: dict[str, Any] = field(default_factory=dict)  # fields of a later version, kept as they are

    def save(self, directory: str | Path) -> None:
        record = {
            "step": self.step,
            "elapsed": self.elapsed,
            "best_val_bpc": None if math.isinf(self.best_val_bpc) else self.best_val_bpc,
            "optimizer_steps": self.optimizer_steps,
            "rng_state": self.rng_state,
            "sample_rng_state": self.sample_rng_state,
            "config": self.config,
            "corpus": self.corpus,
            "encoding": self.encoding,
            "vocab": self.vocab,
            "threads": self.threads,
            "budget": self.budget,
            "steps_per_epoch": self.steps_per_epoch,
            "auto_choice": self.auto_choice,
            **({"parent": self.parent} if self.parent else {}),
            **self.extra,
        }
        checkpoint.save_training_state(directory, self.arrays, record)

    @classmethod
    def load(cls, directory: str | Path) -> TrainingState:
        """The state a directory holds; ModelFormatError (one line) if it is missing or corrupt."""
        arrays, record = checkpoint.load_training_state(directory)  # checks the record's types
        known = set(cls.__dataclass_fields__) - {"arrays", "extra"}
        best = record.get("best_val_bpc")
        fields = {name: record[name] for name in known if name in record and name != "best_val_bpc"}
        return cls(
            arrays=arrays,
            best_val_bpc=math.inf if best is None else float(best),
            extra={name: value for name, value in record.items() if name not in known},
            **fields,
        )
