"""The "step" events of a training run: the training loss, the throughput and the time left, sent
at most every PROGRESS_SECONDS (charrnn.training.config)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from charrnn.training.config import PROGRESS_SECONDS, TrainEvent

if TYPE_CHECKING:
    from charrnn.training.run import Run


class Progress:
    """The "step" events: throughput and ETA over the time since the last one, leaving out the
    time spent evaluating and saving."""

    def __init__(self, run: Run):
        self.run = run
        self.clock = time.perf_counter()
        self.loss_sum, self.loss_count, self.chars, self.paused = 0.0, 0, 0, 0.0
        self.chars_per_step = run.config.batch_size * run.config.seq_length

    def after_step(self, loss: float, lr: float, elapsed: float, first: bool) -> None:
        run = self.run
        self.loss_sum += loss
        self.loss_count += 1
        self.chars += self.chars_per_step
        now = time.perf_counter()
        if now - self.clock < PROGRESS_SECONDS and not first:
            return
        rate = self.chars / max(now - self.clock - self.paused, 1e-9)
        eta = None
        if run.total_steps is not None:
            eta = (run.total_steps - run.step) * self.chars_per_step / rate
        if run.time_limit is not None:
            eta = min(eta if eta is not None else math.inf, run.time_limit - elapsed)
        run.rate_for_log = round(rate, 1)
        run.emit(
            TrainEvent(
                "step",
                step=run.step,
                total_steps=run.total_steps,
                epoch=run.step / run.steps_per_epoch,
                train_loss=self.loss_sum / self.loss_count,
                best_val_bpc=None if math.isinf(run.best) else run.best,
                chars_per_sec=rate,
                elapsed=elapsed,
                eta_seconds=max(eta, 0.0) if eta is not None else None,
                lr=lr,
            )
        )
        self.loss_sum, self.loss_count, self.chars, self.paused = 0.0, 0, 0, 0.0
        self.clock = now
