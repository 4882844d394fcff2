"""Training curves of a model directory: read metrics.jsonl, draw a PNG (matplotlib) or a text chart.

matplotlib is an optional extra and is imported only when a picture is drawn; the text chart needs
nothing beyond numpy. The library never prints: the text chart is returned as a string.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.atomic import atomic_write
from charrnn.errors import InputError, ModelFormatError, StorageError, describe_os_error
from charrnn.model import checkpoint

LN2 = math.log(2.0)
X_AXES = ("steps", "time")
INSTALL_HINT = 'pip install "charrnn[plot]"'

VAL_MARK, TRAIN_MARK, BEST_MARK = "o", "x", "*"


@dataclass(frozen=True)
class Curves:
    """One model's evaluations; a missing value is NaN."""

    name: str
    hidden: int | None
    steps: np.ndarray  # (N,) float64, step of each evaluation
    elapsed: np.ndarray  # (N,) float64, training seconds over the whole run
    train_bpc: np.ndarray  # (N,) float64, recent training loss in bits per character
    val_bpc: np.ndarray  # (N,) float64, validation bits per character

    @property
    def best_index(self) -> int | None:
        if np.isnan(self.val_bpc).all():
            return None
        return int(np.nanargmin(self.val_bpc))  # the first of equal minima, as training keeps it

    @property
    def best_val_bpc(self) -> float | None:
        index = self.best_index
        return None if index is None else float(self.val_bpc[index])

    def x_values(self, x_axis: str) -> np.ndarray:
        return self.steps if x_axis == "steps" else self.elapsed

    def title(self, short: bool = False) -> str:
        parts = [self.name]
        if self.hidden:
            parts.append(f"H={self.hidden}" if short else f"{self.hidden} hidden units")
        best = self.best_index
        if best is not None:
            parts.append(
                f"best val {self.val_bpc[best]:.3f} bpc"
                if short
                else f"best validation {self.val_bpc[best]:.3f} bpc at step {int(self.steps[best]):,}"
            )
        return ", ".join(parts)


def _number(value, scale: float = 1.0) -> float:
    """A finite float, or NaN for a null, a non-number or an infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    value = float(value) / scale
    return value if math.isfinite(value) else math.nan


def load_curves(directory: str | Path) -> Curves:
    """The evaluations logged in a model directory.

    ModelFormatError if the directory is missing or is not a model directory; InputError if the
    model has no evaluations yet.
    """
    directory = Path(directory)
    try:
        records = (
            [
                r
                for r in checkpoint.read_metrics(directory)
                if isinstance(r, dict) and math.isfinite(_number(r.get("step")))
            ]
            if directory.is_dir()
            else []
        )
    except OSError as error:  # unreadable, or a folder where the log should be
        raise StorageError(describe_os_error(error, directory / checkpoint.METRICS_FILE)) from None
    except UnicodeDecodeError:
        raise ModelFormatError(f"{directory / checkpoint.METRICS_FILE}: corrupt (not UTF-8 text)") from None
    try:
        meta = checkpoint.read_meta(directory)
    except ModelFormatError:
        # A run killed before it wrote meta.json still has a log worth drawing; without either,
        # this is no model directory and the reason is read_meta's.
        if not records or (directory / checkpoint.META_FILE).exists():
            raise
        meta = {}
    if not records:
        raise InputError(
            f"{directory}: the model has no evaluations yet ({checkpoint.METRICS_FILE} "
            "is empty or missing); train it past its first evaluation (--eval-every) "
            "and plot again"
        )
    records.sort(key=lambda r: r["step"])  # stable: a resumed run's records keep their order
    hidden = meta.get("hidden")
    return Curves(
        name=directory.resolve().name or str(directory),
        hidden=hidden if isinstance(hidden, int) else None,
        steps=np.array([_number(r["step"]) for r in records]),  # (N,)
        elapsed=np.array([_number(r.get("elapsed")) for r in records]),  # (N,)
        train_bpc=np.array([_number(r.get("train_loss"), LN2) for r in records]),  # (N,)
        val_bpc=np.array([_number(r.get("val_bpc")) for r in records]),  # (N,)
    )


# ---------------------------------------------------------------------------------------------
# Axis helpers shared by both drawings


def _time_unit(max_seconds: float) -> tuple[str, float]:
    """A unit that keeps the time axis's numbers small: (name, seconds per unit)."""
    if max_seconds < 120:
        return "seconds", 1.0
    if max_seconds < 2 * 3600:
        return "minutes", 60.0
    return "hours", 3600.0


def _x_label(x_axis: str, curves: Curves) -> tuple[str, float]:
    """The axis label and the divisor that turns raw x values into the labelled unit."""
    if x_axis == "steps":
        return "step", 1.0
    unit, scale = _time_unit(np.nanmax(curves.elapsed, initial=0.0))
    return f"training time ({unit})", scale


def _compact(value: float) -> str:
    """1234 -> '1,234', 25000 -> '25k', 1500000 -> '1.5M', 2.5 -> '2.5'."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.4g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.4g}k"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:.3g}"


def _nice_step(span: float, target_ticks: int) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten giving about `target_ticks` intervals."""
    raw = span / max(target_ticks, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power


# ---------------------------------------------------------------------------------------------
# PNG


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        raise InputError(
            f"drawing a picture needs matplotlib: {INSTALL_HINT}, or use --ascii for a chart in the terminal"
        ) from None
    return Figure, FigureCanvasAgg, FuncFormatter


def render_image(curves: Curves, x_axes: tuple[str, ...] = X_AXES, image_format: str = "png") -> bytes:
    """The curves drawn by matplotlib's Agg renderer (no display needed), one panel per x axis."""
    Figure, FigureCanvasAgg, FuncFormatter = _import_matplotlib()
    # Figure + the Agg canvas, not pyplot: no global backend switch, nothing left open.
    figure = Figure(figsize=(6.0 * len(x_axes), 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    if image_format not in figure.canvas.get_supported_filetypes():
        raise InputError(f"cannot write a .{image_format} picture; use .png, .svg or .pdf")
    axes = figure.subplots(1, len(x_axes), squeeze=False, sharey=True)[0]
    best = curves.best_index
    many = len(curves.steps) > 60  # markers on every point only while they stay readable
    for panel, x_axis in zip(axes, x_axes, strict=True):
        label, scale = _x_label(x_axis, curves)
        x = curves.x_values(x_axis) / scale  # (N,)
        for values, name, style in (
            (
                curves.train_bpc,
                "training (recent average)",
                dict(color="tab:blue", alpha=0.75, linewidth=1.2, marker="."),
            ),
            (curves.val_bpc, "validation", dict(color="tab:orange", linewidth=1.8, marker="o")),
        ):
            shown = np.isfinite(x) & np.isfinite(values)  # nulls are skipped, the line joins over them
            if many:
                style["marker"] = None
            if shown.any():
                panel.plot(x[shown], values[shown], label=name, markersize=4, **style)
            else:
                panel.plot([], [], label=f"{name}: none recorded", **style)
        if best is not None and np.isfinite(x[best]):
            panel.plot(
                [x[best]],
                [curves.val_bpc[best]],
                linestyle="none",
                marker="*",
                markersize=14,
                color="tab:red",
                label=f"best validation {curves.val_bpc[best]:.3f} bpc",
            )
        if np.nanmin(x, initial=0.0) >= 0:
            panel.set_xlim(left=0)  # from the start of training, as the text chart does
        panel.set_xlabel(label)
        panel.grid(True, alpha=0.3)
        if x_axis == "steps":
            panel.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _compact(value)))
    axes[0].set_ylabel("bits per character")
    axes[0].legend(loc="upper right", fontsize="small")
    figure.suptitle(curves.title())
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format)
    return buffer.getvalue()


def write_image(curves: Curves, out: str | Path, x_axes: tuple[str, ...] = X_AXES) -> Path:
    """Draw to `out` (format from its suffix, PNG by default) through a temporary file and a rename."""
    out = Path(out)
    image_format = out.suffix[1:].lower() or "png"
    if not out.parent.is_dir():  # checked before drawing, which takes a second
        if out.parent.exists():
            raise InputError(f"{out.parent}: is a file, not a folder to write {out.name} into")
        raise InputError(f"{out.parent}: no such directory to write {out.name} into")
    data = render_image(curves, x_axes, image_format)
    try:
        atomic_write(out, data)
    except OSError as error:  # the previous picture, if any, is left as it was
        raise StorageError(describe_os_error(error, out, then="run charrnn plot again")) from None
    return out


# ---------------------------------------------------------------------------------------------
# Text chart


def _place(values: np.ndarray, low: float, high: float, cells: int) -> np.ndarray:
    """Cell index (0 .. cells-1) of each value on an axis running from `low` to `high`."""
    fraction = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.clip(np.rint(fraction * (cells - 1)), 0, cells - 1).astype(np.int64)


def _vertical_axis(low: float, high: float, rows: int) -> tuple[float, float, dict[int, str]]:
    """(bottom value, top value, {row from the top: tick label}) for data from `low` to `high`.

    Every row spans the same bpc, a whole fraction of a round tick interval, so each tick label
    sits exactly on its row; at least two rows are labelled.
    """
    if high - low < 1e-3:
        low, high = low - 0.05, high + 0.05
    y_step = _nice_step(high - low, max(rows // 3, 1))
    while True:
        rows_per_tick = max(math.floor((rows - 2) * y_step / (high - low)), 1)
        row_span = y_step / rows_per_tick
        first_row_units = math.floor(low / row_span + 1e-9)  # the bottom row's value in row_spans
        decimals = max(0, -math.floor(math.log10(y_step) + 1e-9))
        labels = {
            rows - 1 - j: f"{(first_row_units + j) * row_span:.{decimals}f}"
            for j in range(rows)
            if (first_row_units + j) % rows_per_tick == 0
        }
        if len(labels) >= 2 or rows_per_tick == 1:
            break
        y_step = _nice_step(y_step / 2.5, 1)  # the next finer round interval: 5 -> 2 -> 1 -> 0.5
    bottom = first_row_units * row_span
    return bottom, bottom + (rows - 1) * row_span, labels


def render_ascii(curves: Curves, width: int = 79, height: int = 22, x_axis: str = "steps") -> str:
    """A chart of bits per character against steps (or time) in `width` x `height` characters.

    Validation points are drawn over training points; the best validation point gets its own mark.
    """
    if width < 30 or height < 10:
        raise InputError(f"a text chart needs at least 30 x 10 characters, got {width} x {height}")
    x_label, x_scale = _x_label(x_axis, curves)
    x = curves.x_values(x_axis) / x_scale  # (N,)
    series = [(curves.train_bpc, TRAIN_MARK), (curves.val_bpc, VAL_MARK)]  # later ones draw on top
    finite_y = np.concatenate([v[np.isfinite(v) & np.isfinite(x)] for v, _ in series])
    if finite_y.size == 0:
        raise InputError(f"the evaluations hold no bits-per-character values to draw against {x_label}")

    rows = height - 6  # title, y label, x axis, x tick labels, x label, legend
    y_low, y_high, labels = _vertical_axis(float(finite_y.min()), float(finite_y.max()), rows)
    gutter = max(len(s) for s in labels.values()) + 1

    # Horizontal axis: from zero (or the first x if negative) to the last evaluation.
    columns = width - gutter - 1
    x_low = min(0.0, float(np.nanmin(x, initial=0.0)))
    x_high = float(np.nanmax(x, initial=0.0))
    if x_high <= x_low:
        x_high = x_low + 1.0

    grid = [[" "] * columns for _ in range(rows)]
    for values, mark in series:
        shown = np.isfinite(values) & np.isfinite(x)
        for c, r in zip(
            _place(x[shown], x_low, x_high, columns), _place(values[shown], y_low, y_high, rows), strict=True
        ):
            grid[rows - 1 - r][c] = mark
    best = curves.best_index
    if best is not None and np.isfinite(x[best]):
        c = _place(x[best : best + 1], x_low, x_high, columns)[0]
        r = _place(curves.val_bpc[best : best + 1], y_low, y_high, rows)[0]
        grid[rows - 1 - r][c] = BEST_MARK

    lines = [_fit([curves.title(), curves.title(short=True)], width), "bits/char"]
    for row in range(rows):
        tick = row in labels
        lines.append(f"{labels.get(row, ''):>{gutter - 1}} {'+' if tick else '|'}{''.join(grid[row])}")

    # X ticks: round values, each label centred under its tick unless it would overlap a neighbour.
    x_step = _nice_step(x_high - x_low, max(columns // 12, 1))
    x_ticks = np.arange(math.ceil(x_low / x_step) * x_step, x_high + x_step * 1e-9, x_step)  # (T,)
    axis = ["-"] * columns
    tick_labels = [" "] * (columns + gutter + 8)
    free_from = 0
    for value, c in zip(x_ticks, _place(x_ticks, x_low, x_high, columns), strict=True):
        if c > 0:  # at column 0 the corner stands for the tick
            axis[c] = "+"
        text = _compact(float(round(value, 10)))
        start = min(max(gutter + 1 + c - len(text) // 2, 0), width - len(text))
        if start >= free_from and start + len(text) <= width:
            tick_labels[start : start + len(text)] = text
            free_from = start + len(text) + 1
    lines.append(" " * gutter + "+" + "".join(axis))
    lines.append("".join(tick_labels).rstrip())
    lines.append(f"{x_label:^{width}}".rstrip())

    train_entry = "training" if np.isfinite(curves.train_bpc).any() else "training: none recorded"
    best_entry = [] if best is None else [f"{BEST_MARK} best {curves.val_bpc[best]:.3f}"]
    lines.append(
        _fit(
            [
                "   ".join([f"{VAL_MARK} validation", f"{TRAIN_MARK} {train_entry}", *best_entry]),
                "  ".join([f"{VAL_MARK} val", f"{TRAIN_MARK} {train_entry}", *best_entry]),
                "  ".join([f"{VAL_MARK} val", f"{TRAIN_MARK} train", *best_entry]),
            ],
            width,
        )
    )
    return "\n".join(line[:width] for line in lines)


def _fit(variants, width: int) -> str:
    """The first of `variants` (longest first) that fits in `width`, else the last one cut short."""
    variants = list(variants)
    return next((v for v in variants if len(v) <= width), variants[-1][:width])
