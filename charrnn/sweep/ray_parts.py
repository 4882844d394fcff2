"""The parts of a sweep that live inside Ray Tune: the trial function and the callback that
reports progress to the driver.

Imported only once Ray is known to be installed. Workers run `run_trial`; they need charrnn and
Ray installed but neither the corpus file nor a filesystem shared with the driver: the text
arrives as bytes in Ray's object store, and each trial's model directory is copied to the
driver's DIR/trials/<trial>/ at every evaluation through the sink (sink.py), an actor pinned to
the driver's node.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import ray
from ray import tune

from charrnn.errors import CharRNNError
from charrnn.model import checkpoint
from charrnn.sweep.layout import FAILED, FINISHED, STOPPED, TRIAL_FILES

if TYPE_CHECKING:
    from charrnn.sweep.book import Bookkeeper

# The driver's bookkeeper while a sweep runs (see book.py). The callback Tune pickles into its
# experiment state holds nothing, so a restored sweep reports to the bookkeeper of the new run.
ACTIVE: Bookkeeper | None = None


def trial_name(trial) -> str:
    """trial_00003: Tune's per-experiment counter, stable across restores."""
    return "trial_" + str(trial.trial_id).rsplit("_", 1)[-1]


class _Mirror:
    """Sends what changed in a trial's directory on the worker to the sink on the driver."""

    def __init__(self, directory: Path, name: str, sink):
        self.directory, self.name, self.sink = directory, name, sink
        self.seen: dict[str, tuple] = {}

    def push(self) -> None:
        files = {}
        for file_name in TRIAL_FILES:
            path = self.directory / file_name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            mark = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if self.seen.get(file_name) != mark:
                files[file_name] = path.read_bytes()
                self.seen[file_name] = mark
        if files:
            ray.get(self.sink.save.remote(self.name, files))


def run_trial(config: dict, *, corpus: bytes, job: dict, sink) -> None:
    """One trial, on a worker: train() on a temporary copy of the text, reporting every evaluation
    to Tune (which may stop the trial there) after mirroring the model directory to the driver."""
    from charrnn.training.config import Budget
    from charrnn.training.loop import train

    name = tune.get_context().get_trial_name()
    work = Path(tempfile.mkdtemp(prefix="charrnn-trial-"))
    try:
        text_path = work / job["corpus_name"]
        text_path.write_bytes(corpus)
        model_dir = work / "model"
        model_dir.mkdir()
        saved = ray.get(sink.load.remote(name))
        for file_name, data in saved.items():
            (model_dir / file_name).write_bytes(data)
        resume = checkpoint.STATE_FILE in saved
        mirror = _Mirror(model_dir, name, sink)
        steps, minutes = job["budget"].get("steps"), job["budget"].get("minutes")

        def on_event(event) -> None:
            if event.kind == "eval":
                mirror.push()
                # At the end of its budget a trial is finished even if Tune stops it right here
                # (ASHA stops every trial that reaches its last rung).
                done = bool((steps and event.step >= steps) or (minutes and event.elapsed >= minutes * 60.0))
                tune.report(
                    {
                        "step": event.step,
                        "val_bpc": event.val_bpc,
                        "best_val_bpc": event.best_val_bpc,
                        "elapsed": event.elapsed,
                        "finished": done,
                    }
                )

        result = train(
            text_path,
            model_dir,
            overrides={**job["fixed"], **config},
            budget=Budget(**job["budget"]),
            resume=resume,
            force=not resume,
            encoding=job["encoding"],
            threads=job["threads"],
            on_event=on_event,
            corpus_path=job.get("corpus_path"),
        )
        mirror.push()
        tune.report(
            {
                "step": result.step,
                "val_bpc": result.last_val_bpc or result.best_val_bpc,
                "best_val_bpc": result.best_val_bpc,
                "elapsed": result.elapsed,
                "finished": True,
            }
        )
    except CharRNNError as error:
        ray.get(sink.record_error.remote(name, str(error)))
        raise
    except Exception as error:
        ray.get(sink.record_error.remote(name, f"{type(error).__name__}: {error}"))
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


class SweepCallback(tune.Callback):
    """Passes Tune's trial events to the driver's bookkeeper (ACTIVE); holds no state itself."""

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        pass

    def on_trial_start(self, iteration, trials, trial, **info):
        if ACTIVE is not None:
            ACTIVE.started(trial_name(trial), dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if ACTIVE is not None:
            ACTIVE.reported(trial_name(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if ACTIVE is not None:
            finished = bool((trial.last_result or {}).get("finished"))
            ACTIVE.ended(trial_name(trial), FINISHED if finished else STOPPED, dict(trial.config))

    def on_trial_error(self, iteration, trials, trial, **info):
        if ACTIVE is not None:
            ACTIVE.ended(trial_name(trial), FAILED, dict(trial.config))

    def on_step_end(self, iteration, trials, **info):
        if ACTIVE is not None:
            ACTIVE.tick()
