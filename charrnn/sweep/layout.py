"""The sweep directory, on the machine that runs `charrnn sweep` (the driver):

    DIR/sweep.json        the sweep's settings (space, trials, budget, corpus), read by --resume
    DIR/trials/<trial>/   one ordinary model directory per trial (charrnn sample/info/plot read it)
    DIR/best              a relative link to the best trial's directory (survives moving DIR)
    DIR/results.jsonl     one JSON line per trial, best first
    DIR/tune/             Ray Tune's own experiment state, which --resume restores

Every file is written atomically. No Ray here.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from charrnn.atomic import atomic_write
from charrnn.errors import InputError

SETTINGS_FILE = "sweep.json"
RESULTS_FILE = "results.jsonl"
TRIALS_DIR = "trials"
BEST_LINK = "best"
TUNE_DIR = "tune"
EXPERIMENT_NAME = "sweep"
FORMAT = "charrnn-sweep"
FORMAT_VERSION = 1
# Files a trial directory may hold (charrnn.model.checkpoint's names, not imported: it loads Numba, and
# the sink's process needs none of it), in the order they are copied to the driver: the model
# before the state that points past it, as train() itself writes them.
MODEL_FILE, META_FILE, METRICS_FILE, STATE_FILE = ("model.npz", "meta.json", "metrics.jsonl", "training_state.npz")
TRIAL_FILES = (MODEL_FILE, META_FILE, METRICS_FILE, STATE_FILE)

FINISHED, STOPPED, FAILED, RUNNING, PENDING, UNFINISHED = (
    "finished",
    "stopped early",
    "failed",
    "running",
    "pending",
    "unfinished",
)
COMPLETE = (FINISHED, STOPPED, FAILED)


@dataclass
class TrialRecord:
    """What results.jsonl says about one trial."""

    trial: str
    status: str = PENDING
    settings: dict = field(default_factory=dict)
    best_val_bpc: float | None = None
    last_val_bpc: float | None = None
    steps: int = 0
    seconds: float = 0.0  # training time, as train() counts it
    error: str | None = None

    @property
    def stopped_early(self) -> bool:
        return self.status == STOPPED

    def to_json(self) -> dict:
        data = asdict(self)
        data["stopped_early"] = self.stopped_early
        data["dir"] = f"{TRIALS_DIR}/{self.trial}"
        return data

    @classmethod
    def from_json(cls, data: dict) -> TrialRecord:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def rank(records) -> list[TrialRecord]:
    """Best first: trials with a validation figure by it, then the others by name."""

    def key(record):
        bpc = record.best_val_bpc
        good = bpc is not None and math.isfinite(bpc)
        return (not good, bpc if good else 0.0, record.trial)

    return sorted(records, key=key)


_TRIAL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def is_trial_name(name) -> bool:
    """A name that is one directory entry under trials/: letters, digits, _ . -, and not `.` or
    `..` (which would name trials/ itself or the sweep's directory)."""
    return isinstance(name, str) and _TRIAL_NAME.fullmatch(name) is not None and name.strip(".") != ""


def check_trial_name(name) -> str:
    if not is_trial_name(name):
        raise InputError(f"{str(name)[:60]!r} is not a trial's name (letters, digits, _ . -; not . or ..)")
    return name


def trial_dir(out_dir: Path, name: str) -> Path:
    return out_dir / TRIALS_DIR / check_trial_name(name)


def tune_experiment_dir(out_dir: Path) -> Path:
    return out_dir.resolve() / TUNE_DIR / EXPERIMENT_NAME


def write_settings(out_dir: Path, settings: dict) -> None:
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **settings}
    atomic_write(out_dir / SETTINGS_FILE, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def read_settings(out_dir: Path) -> dict:
    path = out_dir / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{out_dir}: no sweep to resume (no {SETTINGS_FILE}); start one with "
            f"charrnn sweep TEXT_FILE --out {out_dir}"
        ) from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable sweep settings file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a charrnn sweep settings file")
    if data.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path}: sweep format version {data.get('format_version')} is not "
            f"one this charrnn reads ({FORMAT_VERSION})"
        )
    return data


def write_results(out_dir: Path, records) -> None:
    lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rank(records))
    atomic_write(out_dir / RESULTS_FILE, lines.encode("utf-8"))


def read_results(out_dir: Path) -> dict[str, TrialRecord]:
    path = out_dir / RESULTS_FILE
    records: dict[str, TrialRecord] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            record = TrialRecord.from_json(json.loads(line))
        except (ValueError, TypeError):
            continue  # a line no run of this charrnn wrote; the trial is simply not counted
        records[record.trial] = record
    return records


def link_best(out_dir: Path, name: str | None) -> None:
    """DIR/best -> trials/<name> (relative), replaced atomically; removed when there is no best."""
    link = out_dir / BEST_LINK
    if name is None:
        if link.is_symlink():
            link.unlink()
        return
    target = Path(TRIALS_DIR) / check_trial_name(name)
    tmp = out_dir / f".{BEST_LINK}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp, target_is_directory=True)
    if link.exists() and not link.is_symlink():  # a copy made by hand: leave it to the user
        tmp.unlink()
        raise InputError(f"{link} exists and is not a link; move it away")
    os.replace(tmp, link)


def holds_sweep(out_dir: Path) -> bool:
    names = (SETTINGS_FILE, RESULTS_FILE, TRIALS_DIR, TUNE_DIR)
    return any((out_dir / name).exists() for name in names)


def clear_sweep(out_dir: Path) -> None:
    """What --force replaces: only the entries a sweep writes, nothing else in DIR."""
    for name in (TRIALS_DIR, TUNE_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (SETTINGS_FILE, RESULTS_FILE):
        (out_dir / name).unlink(missing_ok=True)
    link_best(out_dir, None)
