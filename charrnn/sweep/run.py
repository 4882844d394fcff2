"""run_sweep: checks everything it can before Ray starts, then runs the trials with Ray Tune's
Tuner (random search over the space, ASHA early stopping) on a local Ray or a running cluster.

Here: the sweep directory opened (new, replaced or resumed), its text checked, and the trials
ranked at the end. Reaching Ray is charrnn.sweep.ray_setup, running the trials on it
charrnn.sweep.tuner, following them charrnn.sweep.book; the settings and the events are
charrnn.sweep.settings.

The library never prints: progress goes to `on_event` as SweepEvents.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

from charrnn import __version__
from charrnn.errors import InputError
from charrnn.sweep import layout
from charrnn.sweep.book import Bookkeeper
from charrnn.sweep.layout import COMPLETE, PENDING, RUNNING, UNFINISHED, TrialRecord
from charrnn.sweep.ray_setup import prepare_ray_environment, require_ray, resolve_address
from charrnn.sweep.settings import SweepEvent, SweepProgress, SweepResult, SweepSettings
from charrnn.sweep.space import Dimension, describe_space
from charrnn.sweep.tuner import run_trials


def run_sweep(
    text_path: str | Path | None,
    out_dir: str | Path,
    settings: SweepSettings | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    address: str | None = None,
    on_event: Callable[[SweepEvent], None] | None = None,
) -> SweepResult:
    """Run (or, with resume, continue) a sweep whose directory is `out_dir`.

    On resume the settings come from out_dir/sweep.json and `settings` must be None; `text_path`
    may be None (the recorded path) or the same text moved elsewhere.
    """
    emit = on_event or (lambda event: None)
    out_dir = Path(out_dir)
    if resume:
        settings, text_path, corpus, records = _resumed_sweep(text_path, out_dir, settings, force)
    else:
        settings, text_path = _new_sweep(text_path, out_dir, settings, force)
        corpus, records = None, {}
    space = settings.check()
    data, sha256 = _read_text(text_path, settings.encoding, corpus, out_dir)
    address = resolve_address(address)
    prepare_ray_environment(address)
    ray = require_ray()

    if not resume:
        _write_new_sweep(out_dir, settings, text_path, sha256, ray.__version__, force)
    (out_dir / layout.TRIALS_DIR).mkdir(parents=True, exist_ok=True)

    budget = settings.budget()
    emit(SweepEvent("start", SweepProgress(settings.trials), text=_start_text(settings, space, budget, resume)))
    book = Bookkeeper(out_dir, settings.trials, records, emit, error_of=lambda name: None)
    run_trials(ray, address, settings, space, budget, text_path, data, out_dir, resume, book)
    return _finish(out_dir, records, settings.trials, space, book)


def _resumed_sweep(
    text_path: str | Path | None, out_dir: Path, settings: SweepSettings | None, force: bool
) -> tuple[SweepSettings, Path, dict, dict[str, TrialRecord]]:
    """A sweep to resume: its stored settings, its text, the corpus it recorded, its trials so far."""
    if settings is not None:
        raise InputError("a resumed sweep keeps its settings; give only --out, --resume (and --address)")
    if force:
        raise InputError("--resume continues the sweep in --out and --force replaces it: give one of them")
    stored = layout.read_settings(out_dir)
    settings = SweepSettings.from_json(stored["settings"])
    corpus = stored["corpus"]
    text_path = Path(text_path) if text_path is not None else Path(corpus["path"])
    if not layout.tune_experiment_dir(out_dir).is_dir():
        raise InputError(
            f"{out_dir}: the sweep's Tune state ({layout.TUNE_DIR}/) is missing; start it again with --force"
        )
    return settings, text_path, corpus, layout.read_results(out_dir)


def _new_sweep(
    text_path: str | Path | None, out_dir: Path, settings: SweepSettings | None, force: bool
) -> tuple[SweepSettings, Path]:
    """A new sweep: its settings (the defaults if none) and its text; out_dir must be free for it."""
    settings = settings or SweepSettings()
    if text_path is None:
        raise InputError("give a text file to sweep on")
    text_path = Path(text_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a directory")
    if layout.holds_sweep(out_dir) and not force:
        raise InputError(f"{out_dir} already holds a sweep; pass --resume to continue it or --force to replace it")
    return settings, text_path


def _read_text(text_path: Path, encoding: str, corpus: dict | None, out_dir: Path) -> tuple[bytes, str]:
    """The text's bytes (sent to the trials through Ray's object store) and their sha256; a resumed
    sweep's text (`corpus` recorded) must be the one it ran on."""
    if not text_path.is_file():
        raise InputError(
            f"{text_path}: no such file; `charrnn download NAME` fetches a text (`charrnn corpora` lists them)"
        )
    data = text_path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if corpus is not None and sha256 != corpus["sha256"]:
        raise InputError(
            f"{text_path} is not the text this sweep ran on (its sha256 differs "
            f"from the one recorded in {out_dir / layout.SETTINGS_FILE})"
        )
    _check_text(text_path, data, encoding)
    return data, sha256


def _write_new_sweep(
    out_dir: Path, settings: SweepSettings, text_path: Path, sha256: str, ray_version: str, force: bool
) -> None:
    """out_dir (emptied of an old sweep with force) with the new sweep's sweep.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:
        layout.clear_sweep(out_dir)
    layout.write_settings(
        out_dir,
        {
            "settings": settings.to_json(),
            "corpus": {
                "name": text_path.name,
                "path": str(text_path.resolve()),
                "bytes": text_path.stat().st_size,
                "sha256": sha256,
            },
            "charrnn_version": __version__,
            "ray_version": ray_version,
        },
    )


def _start_text(settings: SweepSettings, space: dict[str, Dimension], budget: dict, resume: bool) -> str:
    return (
        f"{'Resuming a sweep' if resume else 'Sweep'} of {settings.trials} trial"
        f"{'s' if settings.trials != 1 else ''} over {describe_space(space)}; "
        f"each {_budget_text(budget)}, {settings.threads} thread"
        f"{'s' if settings.threads != 1 else ''}"
        + (f", {settings.concurrent} at once" if settings.concurrent else "")
        + ("; ASHA early stopping" if settings.early_stop else "")
    )


def _finish(
    out_dir: Path, records: dict[str, TrialRecord], trials: int, space: dict[str, Dimension], book: Bookkeeper
) -> SweepResult:
    """The trials ranked into results.jsonl, best/ linked to the best trial with a model, "done"."""
    interrupted = _reconcile(records, trials)
    ranked = layout.rank(records.values())
    best = next(
        (
            r
            for r in ranked
            if r.best_val_bpc is not None
            and math.isfinite(r.best_val_bpc)
            and (layout.trial_dir(out_dir, r.trial) / "model.npz").is_file()
        ),
        None,
    )
    layout.write_results(out_dir, ranked)
    layout.link_best(out_dir, best.trial if best else None)
    varied = tuple(name for name, dim in space.items() if not dim.is_fixed)
    book.emit(SweepEvent("done", book.progress()))
    return SweepResult(out_dir, ranked, best, interrupted, varied)


def _check_text(path: Path, data: bytes, encoding: str) -> None:
    """What every trial would fail on, said once: a text that does not decode, or is empty."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path}: not {encoding} text (byte {error.start}); give its --encoding, e.g. latin-1 or cp1252"
        ) from None
    if not text.strip():
        raise InputError(f"{path}: the file is empty" if not data else f"{path}: the file holds no text")


def _budget_text(budget: dict) -> str:
    parts = []
    if budget["minutes"] is not None:
        parts.append(f"{budget['minutes']:g} minute{'s' if budget['minutes'] != 1 else ''}")
    if budget["steps"] is not None:
        parts.append(f"{budget['steps']:,} steps")
    return " or ".join(parts)


def _reconcile(records: dict, total: int) -> bool:
    """Marks trials that never ended as unfinished; True when the sweep did not complete."""
    for record in records.values():
        if record.status in (RUNNING, PENDING):
            record.status = UNFINISHED
    complete = sum(1 for r in records.values() if r.status in COMPLETE)
    return complete < total
