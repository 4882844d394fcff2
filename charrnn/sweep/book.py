"""The driver's record of a sweep's trials while Tune runs them: each trial's status and latest
scores, fed by Tune's callback (charrnn.sweep.ray_parts.SweepCallback), kept in results.jsonl,
and reported to `on_event` as SweepEvents."""

from __future__ import annotations

import time
from pathlib import Path

from charrnn.sweep import layout
from charrnn.sweep.layout import FAILED, FINISHED, RUNNING, STOPPED, TrialRecord
from charrnn.sweep.settings import SweepEvent, SweepProgress

PROGRESS_SECONDS = 1.0  # how often a "progress" event is sent while trials run


class Bookkeeper:
    """The driver's view of the trials, fed by Tune's callback; results.jsonl follows it."""

    def __init__(self, out_dir: Path, total: int, records: dict, emit, error_of):
        self.out_dir, self.total, self.records = out_dir, total, records
        self.emit, self.error_of = emit, error_of
        self.clock = time.perf_counter()
        self.last_tick = 0.0

    def progress(self) -> SweepProgress:
        counts = {FINISHED: 0, STOPPED: 0, FAILED: 0, RUNNING: 0}
        for record in self.records.values():
            if record.status in counts:
                counts[record.status] += 1
        ranked = layout.rank(self.records.values())
        best = ranked[0] if ranked and ranked[0].best_val_bpc is not None else None
        return SweepProgress(
            self.total,
            counts[FINISHED],
            counts[STOPPED],
            counts[FAILED],
            counts[RUNNING],
            best,
            time.perf_counter() - self.clock,
        )

    def _record(self, name: str, settings: dict | None = None) -> TrialRecord:
        record = self.records.get(name)
        if record is None:
            record = self.records[name] = TrialRecord(name)
        if settings:
            record.settings = _plain(settings)
        return record

    def started(self, name: str, settings: dict) -> None:
        record = self._record(name, settings)
        record.status, record.error = RUNNING, None
        self.emit(SweepEvent("trial_start", self.progress(), record))

    def reported(self, name: str, result: dict) -> None:
        record = self._record(name)
        for key, attr in (
            ("best_val_bpc", "best_val_bpc"),
            ("val_bpc", "last_val_bpc"),
            ("step", "steps"),
            ("elapsed", "seconds"),
        ):
            if result.get(key) is not None:
                setattr(record, attr, result[key])

    def ended(self, name: str, status: str, settings: dict) -> None:
        record = self._record(name, settings)
        record.status = status
        if status == FAILED:
            record.error = self.error_of(name) or "failed (see the trial's error.txt under tune/)"
        layout.write_results(self.out_dir, self.records.values())
        self.emit(SweepEvent("trial_end", self.progress(), record))

    def tick(self) -> None:
        now = time.perf_counter()
        if now - self.last_tick >= PROGRESS_SECONDS:
            self.last_tick = now
            self.emit(SweepEvent("progress", self.progress()))


def _plain(settings: dict) -> dict:
    """Settings as JSON-ready Python values (Tune may hand back NumPy scalars)."""
    out = {}
    for key, value in settings.items():
        if hasattr(value, "item"):
            value = value.item()
        out[key] = value
    return out
