"""The search space of a sweep: one dimension per training setting, parsed from the command line.

    "256,512,1024"   a choice among the listed values
    "1e-3:5e-3"      a range, low:high: log-uniform for the learning rate, uniform otherwise
                     (whole numbers for the integer settings, both ends included)
    "512"            one value: the setting is fixed for every trial

Everything here is checked without Ray: a bad value fails before any process starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from charrnn.errors import InputError
from charrnn.model.spec import CELLS
from charrnn.training.config import TrainConfig

# The settings a sweep can vary, in display order, with their types.
SWEEPABLE: dict[str, type] = {
    "cell": str,
    "hidden": int,
    "layers": int,
    "dropout": float,
    "lr": float,
    "seq_length": int,
    "batch_size": int,
}
LOG_SCALE = frozenset({"lr"})
# With no space given: every cell, three sizes, one or two layers, some dropout, a decade of rates.
DEFAULT_SPACE: dict[str, str] = {
    "cell": "rnn,lstm,gru",
    "hidden": "256,512,1024",
    "layers": "1,2",
    "dropout": "0:0.3",
    "lr": "1e-3:5e-3",
}


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Dimension:
    """One swept setting: `values` for a choice (one value: fixed), or `low`..`high` for a range."""

    name: str
    values: tuple = ()
    low: float | int | None = None
    high: float | int | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_fixed(self) -> bool:
        return not self.is_range and len(self.values) == 1

    @property
    def log(self) -> bool:
        return self.is_range and self.name in LOG_SCALE

    def describe(self) -> str:
        if self.is_range:
            return f"{self.low:g}..{self.high:g}" + (" (log)" if self.log else "")
        return "|".join(_show(v) for v in self.values)

    def to_tune(self):
        """The Tune search-space object (Ray imported here, only when a sweep runs)."""
        from ray import tune

        if self.is_fixed:
            return self.values[0]
        if not self.is_range:
            return tune.choice(list(self.values))
        if SWEEPABLE[self.name] is int:
            return tune.randint(int(self.low), int(self.high) + 1)  # its upper end is excluded
        if self.log:
            return tune.loguniform(float(self.low), float(self.high))
        return tune.uniform(float(self.low), float(self.high))


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(name: str, text: str, kind: type):
    try:
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InputError(f"{option_name(name)}: {text!r} is not {what}") from None
    return text


def _check_value(name: str, value) -> None:
    """The trainer's own checks, one value at a time, so the message names the option."""
    if name == "cell" and value not in CELLS:
        raise InputError(f"--cell: unknown cell {value!r}; choose among {', '.join(CELLS)}")
    try:
        TrainConfig(**{name: value}).check()
    except InputError as error:
        raise InputError(f"{option_name(name)} {_show(value)}: {error}") from None


def parse_dimension(name: str, text: str) -> Dimension:
    """A Dimension from an option's text; InputError (one line) for anything no sweep could use."""
    option = option_name(name)
    if name not in SWEEPABLE:
        raise InputError(
            f"{option}: not a setting a sweep can vary (those are {', '.join(option_name(n) for n in SWEEPABLE)})"
        )
    kind = SWEEPABLE[name]
    text = text.strip()
    if not text:
        raise InputError(f"{option}: give a value, a comma list (a,b,c) or a range (low:high)")
    if ":" in text:
        if kind is str:
            raise InputError(f"{option} takes a comma list ({','.join(CELLS)}), not a range")
        parts = [part.strip() for part in text.split(":")]
        if len(parts) != 2 or not all(parts):
            raise InputError(
                f"{option} {text}: a range is low:high, both given, e.g. {'1e-3:5e-3' if kind is float else '128:512'}"
            )
        low, high = (_convert(name, part, kind) for part in parts)
        if low == high:
            raise InputError(
                f"{option} {text}: the range is empty (low = high); give one value to fix the setting, or a wider range"
            )
        if low > high:
            raise InputError(f"{option} {text}: the range is inverted (low > high); write it as {parts[1]}:{parts[0]}")
        for value in (low, high):
            _check_value(name, value)
        return Dimension(name, low=low, high=high)
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise InputError(f"{option} {text}: an empty item in the list")
    values = []
    for item in items:
        value = _convert(name, item, kind)
        _check_value(name, value)
        if value not in values:
            values.append(value)
    return Dimension(name, values=tuple(values))


def parse_space(texts: dict[str, str]) -> dict[str, Dimension]:
    """Dimensions in SWEEPABLE's order from {setting: text}; the default space when `texts` is empty."""
    texts = texts or DEFAULT_SPACE
    return {name: parse_dimension(name, texts[name]) for name in SWEEPABLE if name in texts}


def describe_space(space: dict[str, Dimension]) -> str:
    return ", ".join(f"{name} {dim.describe()}" for name, dim in space.items())
