"""The model a new run gets when it names none: the one that reaches the lowest loss in the budget.

Per step, a two-layer LSTM of 512 units learns more than a one-layer vanilla RNN of 1,024, but a step
costs it about twice the time, and early on the RNN's lead in steps wins: in step-budgeted runs on
tiny-shakespeare (BENCHMARKS.md, "Quality per minute") the RNN with twice the LSTM's steps stays
ahead until the LSTM has about 900 steps. So a candidate carries the steps from which it beats the
one before it in the same time, and the budget gets the last candidate it buys that many steps. The
steps come from the budget itself (--steps, --epochs) or, for --minutes, from this machine's measured
training speed of each candidate (charrnn.training.probe). Dropout follows the passes over the text
the gated cells' run will make: none below 2 epochs (too little training to overfit), 0.1 up to 8,
0.25 beyond. The one-layer vanilla RNN gets none: its only dropout is before the output layer, and
there 0.1 cost it 0.011 bpc at 1,100 steps (2.2 epochs) of tiny-shakespeare (BENCHMARKS.md, "Quality
per minute").

The choice depends on nothing else: the same budget, text size and probe give the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from charrnn.model.spec import CELL_NAMES
from charrnn.training.probe import Probe

MODEL_OPTIONS = ("cell", "layers", "hidden", "dropout")  # any of them given: no automatic choice
VALIDATION_SHARE = 0.05  # of a timed budget, at most, for the validation estimates


@dataclass(frozen=True)
class Candidate:
    cell: str
    layers: int
    hidden: int
    min_steps: int  # it is chosen only if the budget buys at least this many steps
    dropout_by_epochs: bool = True  # dropout_for(epochs), else none


# In order; each beat the one before it, given the same time, from about min_steps of its own on.
CANDIDATES = (
    Candidate("rnn", 1, 1024, 0, dropout_by_epochs=False),
    Candidate("lstm", 2, 512, 900),
)
SHAPES = tuple((c.cell, c.layers, c.hidden) for c in CANDIDATES)


def dropout_for(epochs: float) -> float:
    return 0.0 if epochs < 2 else (0.1 if epochs < 8 else 0.25)


@dataclass(frozen=True)
class Choice:
    cell: str
    layers: int
    hidden: int
    dropout: float
    steps: int  # the steps the budget is expected to buy this model
    epochs: float
    chars_per_sec: float | None
    reason: str

    def settings(self) -> dict:
        return {"cell": self.cell, "layers": self.layers, "hidden": self.hidden, "dropout": self.dropout}

    def to_meta(self) -> dict:
        return {
            "reason": self.reason,
            "expected_steps": self.steps,
            "expected_epochs": round(self.epochs, 2),
            "chars_per_sec": self.chars_per_sec,
        }


def _budget_steps(
    candidate: Candidate, seconds: float | None, steps: int | None, probe: Probe | None, chars_per_step: int
) -> tuple[int, float | None]:
    """(steps the budget buys this candidate, its measured training chars/s or None)."""
    limit = steps if steps is not None else math.inf
    rate = probe.rate(candidate.cell, candidate.layers, candidate.hidden) if probe is not None else None
    if seconds is not None:
        if rate is None:
            raise ValueError(f"the probe has no rate for {candidate}")
        limit = min(limit, rate * seconds * (1 - VALIDATION_SHARE) / chars_per_step)
    return int(limit), rate


def choose(
    seconds: float | None, steps: int | None, train_chars: int, batch_size: int, seq_length: int, probe: Probe | None
) -> Choice:
    """The model for a budget of `seconds` (a probe needed) and/or `steps` on `train_chars` training
    characters, at batch_size x seq_length characters per step."""
    if seconds is None and steps is None:
        raise ValueError("a budget of time or steps is needed to choose a model")
    chars_per_step = batch_size * seq_length
    chosen, chosen_steps, chosen_rate = CANDIDATES[0], 0, None
    for candidate in CANDIDATES:
        budget_steps, rate = _budget_steps(candidate, seconds, steps, probe, chars_per_step)
        if candidate is CANDIDATES[0] or budget_steps >= candidate.min_steps:
            chosen, chosen_steps, chosen_rate = candidate, budget_steps, rate
    epochs = chosen_steps * chars_per_step / max(train_chars, 1)
    dropout = dropout_for(epochs) if chosen.dropout_by_epochs else 0.0
    speed = f" at {chosen_rate:,.0f} chars/s here" if chosen_rate is not None else ""
    budget = f"{seconds / 60:g} min" if seconds is not None else f"{steps:,} steps"
    reason = (
        f"{CELL_NAMES[chosen.cell]}, {chosen.layers} layer{'s' if chosen.layers > 1 else ''} of "
        f"{chosen.hidden}, dropout {dropout:g}: about {chosen_steps:,} steps ({epochs:.1f} epochs) "
        f"in {budget}{speed}, the model that learns most in this budget"
    )
    return Choice(chosen.cell, chosen.layers, chosen.hidden, dropout, chosen_steps, epochs, chosen_rate, reason)
