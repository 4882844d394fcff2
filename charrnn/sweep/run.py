"""run_sweep: checks everything it can before Ray starts, then runs the trials with Ray Tune's
Tuner (random search over the space, ASHA early stopping) on a local Ray or a running cluster.

The library never prints: progress goes to `on_event` as SweepEvents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from charrnn import __version__
from charrnn.errors import CharRNNError, InputError
from charrnn.kernels.threads import usable_cores
from charrnn.sweep import layout
from charrnn.sweep.layout import COMPLETE, FAILED, FINISHED, PENDING, RUNNING, STOPPED, UNFINISHED, TrialRecord
from charrnn.sweep.space import Dimension, describe_space, parse_space
from charrnn.training.config import TrainConfig

INSTALL_HINT = 'charrnn sweep needs Ray Tune: pip install "charrnn[sweep]"'
DEFAULT_TRIALS = 8
DEFAULT_TRIAL_MINUTES = 5.0
DEFAULT_EVAL_EVERY = 500
REDUCTION_FACTOR = 3  # ASHA keeps the best third at each rung
RUNGS = 2  # rungs before the end: at 1/9 and 1/3 of the trial budget
PROGRESS_SECONDS = 1.0  # how often a "progress" event is sent while trials run
METRIC = "best_val_bpc"  # what ASHA compares and the trials are ranked by (lower is better)
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before giving up


class RayMissing(CharRNNError):
    """Ray Tune is not installed."""


class SweepError(CharRNNError):
    """Ray could not be started or reached, or the sweep could not run."""


@dataclass(frozen=True)
class SweepSettings:
    """What defines a sweep; stored in DIR/sweep.json and fixed across resumes."""

    space: dict = field(default_factory=dict)  # {setting: text as typed}; empty: the default space
    trials: int = DEFAULT_TRIALS
    trial_minutes: float | None = None  # budget of each trial (with neither: 5 minutes)
    trial_steps: int | None = None
    concurrent: int | None = None  # trials at once (None: as many as the CPUs fit)
    threads: int = 1  # threads (and Ray CPUs) of each trial
    eval_every: int = DEFAULT_EVAL_EVERY
    val_frac: float = 0.05
    seed: int = 0
    encoding: str = "utf-8"
    early_stop: bool = True

    def budget(self) -> dict:
        minutes = self.trial_minutes
        if minutes is None and self.trial_steps is None:
            minutes = DEFAULT_TRIAL_MINUTES
        return {"minutes": minutes, "steps": self.trial_steps}

    def fixed(self) -> dict:
        """The training settings every trial shares."""
        return {"eval_every": self.eval_every, "val_frac": self.val_frac, "seed": self.seed}

    def check(self) -> dict[str, Dimension]:
        """InputError (one line) for settings no sweep could use; the parsed space otherwise."""
        if not isinstance(self.trials, int) or self.trials < 1:
            raise InputError(f"--trials must be 1 or more, got {self.trials}")
        minutes = self.trial_minutes
        if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
            raise InputError(f"--trial-minutes must be positive, got {self.trial_minutes}")
        if self.trial_steps is not None and self.trial_steps < 1:
            raise InputError(f"--trial-steps must be 1 or more, got {self.trial_steps}")
        if self.concurrent is not None and self.concurrent < 1:
            raise InputError(f"--concurrent must be 1 or more, got {self.concurrent}")
        if self.threads < 1:
            raise InputError(f"--threads must be 1 or more, got {self.threads}")
        TrainConfig(**self.fixed()).check()
        try:
            "".encode(self.encoding)
        except LookupError:
            raise InputError(f"--encoding: unknown encoding {self.encoding!r}") from None
        return parse_space(self.space)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SweepSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SweepProgress:
    total: int
    finished: int = 0
    stopped: int = 0
    failed: int = 0
    running: int = 0
    best: TrialRecord | None = None
    elapsed: float = 0.0  # wall-clock seconds since the sweep started

    @property
    def done(self) -> int:
        return self.finished + self.stopped + self.failed


@dataclass(frozen=True)
class SweepEvent:
    """kind: "start" | "ray" | "note" | "trial_start" | "trial_end" | "progress" | "done";
    every event carries the progress so far, "trial_*" events the trial's record."""

    kind: str
    progress: SweepProgress
    record: TrialRecord | None = None
    text: str = ""


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    records: list  # TrialRecords, best first
    best: TrialRecord | None
    interrupted: bool  # some trials never finished: --resume continues them
    varied: tuple  # the settings the space varies (for tables)


class _Bookkeeper:
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


def ray_installed() -> bool:
    """Whether Ray can be imported, without importing it (it reads settings when imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def require_ray():
    """Imports Ray Tune, or RayMissing saying what to install."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


def resolve_address(address: str | None) -> str | None:
    """The cluster to run on: --address, else RAY_ADDRESS, else None (a local Ray for the run).
    A HOST:PORT that does not answer fails here, in one line, before Ray is touched."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return address
    if address.startswith("ray://"):
        raise InputError(
            f"--address {address}: Ray Client addresses are not supported; run "
            "charrnn sweep on a node of the cluster (e.g. its head) with --address "
            "HOST:PORT of the head, or auto"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address}: expected HOST:PORT (the head's GCS port, 6379 by default), or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise SweepError(
            f"--address {address}: no Ray cluster answers there ({reason}); start "
            "one with `ray start --head` or check the address"
        ) from None
    return address


def _is_loopback(address: str | None) -> bool:
    if address is None:
        return True
    host = address.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _prepare_ray_environment(address: str | None) -> None:
    """Settings Ray reads from the environment, some when it is imported: so before that.
    A local Ray (or a cluster on this machine's loopback) keeps every address on 127.0.0.1
    instead of the machine's network address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no prompt, no reporting home
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our results.jsonl instead
    if address != "auto" and _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _start_ray(ray, address: str | None, cpus: int) -> str:
    """ray.init for the run; a line saying where the trials run."""
    options = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False, configure_logging=True)
    try:
        if address is None:
            ray.init(address="local", num_cpus=cpus, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        ray.shutdown()
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = ""
        if address is not None and not os.environ.get("RAY_AUTH_MODE"):
            hint = (
                "; if the cluster uses token authentication, set RAY_AUTH_MODE=token (the "
                "token: RAY_AUTH_TOKEN or ~/.ray/auth_token)"
            )
        raise SweepError(f"Ray could not start or connect: {first}{hint}") from None
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    where = "a local Ray" if address is None else f"the Ray cluster at {address}"
    return f"Ray: {where}, {nodes} node{'s' if nodes != 1 else ''}, {resources.get('CPU', 0):g} CPUs"


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
    _prepare_ray_environment(address)
    ray = require_ray()

    if not resume:
        _write_new_sweep(out_dir, settings, text_path, sha256, ray.__version__, force)
    (out_dir / layout.TRIALS_DIR).mkdir(parents=True, exist_ok=True)

    budget = settings.budget()
    emit(SweepEvent("start", SweepProgress(settings.trials), text=_start_text(settings, space, budget, resume)))
    book = _Bookkeeper(out_dir, settings.trials, records, emit, error_of=lambda name: None)
    _run_trials(ray, address, settings, space, budget, text_path, data, out_dir, resume, book)
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


def _run_trials(
    ray,
    address: str | None,
    settings: SweepSettings,
    space: dict[str, Dimension],
    budget: dict,
    text_path: Path,
    data: bytes,
    out_dir: Path,
    resume: bool,
    book: _Bookkeeper,
) -> None:
    """Ray started (or reached), the trials run by Tune until done or a second Ctrl-C, Ray shut
    down; `book` follows the trials meanwhile."""
    cpus = max(usable_cores(), (settings.concurrent or 1) * settings.threads)
    from charrnn.sweep import ray_parts  # imports ray.tune

    ray_logger = logging.getLogger("ray")
    previous_level = ray_logger.level
    try:
        where = _start_ray(ray, address, cpus)
        # Trials' tracebacks go to Tune's error files; the one-line reason comes through the sink.
        ray_logger.setLevel(logging.CRITICAL)
        book.emit(SweepEvent("ray", book.progress(), text=where))
        cluster_cpus = ray.cluster_resources().get("CPU", 0)
        if address is not None and cluster_cpus < settings.threads:
            book.emit(
                SweepEvent(
                    "note",
                    book.progress(),
                    text=(
                        f"note: each trial asks for {settings.threads} CPUs (--threads) and the cluster "
                        f"has {cluster_cpus:g} now; trials wait until a node with that many joins"
                    ),
                )
            )
        sink = _start_sink(ray, ray_parts, out_dir, text_path)
        book.error_of = lambda name: ray.get(sink.error.remote(name))
        tuner = _make_tuner(ray_parts, settings, space, budget, text_path, data, sink, out_dir, resume)
        ray_parts.ACTIVE = book
        tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C while Tune was stopping: the state is saved
        pass
    finally:
        ray_parts.ACTIVE = None
        ray_logger.setLevel(previous_level)
        ray.shutdown()


def _finish(
    out_dir: Path, records: dict[str, TrialRecord], trials: int, space: dict[str, Dimension], book: _Bookkeeper
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


def _start_sink(ray, ray_parts, out_dir: Path, text_path: Path):
    """The sink actor, on this (the driver's) node, so trial directories land in out_dir."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    from charrnn.sweep.sink import TrialSink

    sink = (
        ray.remote(TrialSink)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        .remote(str((out_dir / layout.TRIALS_DIR).resolve()), str(text_path.resolve()))
    )
    return sink


def _make_tuner(
    ray_parts,
    settings: SweepSettings,
    space: dict,
    budget: dict,
    text_path: Path,
    data: bytes,
    sink,
    out_dir: Path,
    resume: bool,
):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    job = {
        "corpus_name": text_path.name,
        "corpus_path": str(text_path.resolve()),
        "encoding": settings.encoding,
        "fixed": settings.fixed(),
        "budget": budget,
        "threads": settings.threads,
    }
    trainable = tune.with_resources(
        tune.with_parameters(ray_parts.run_trial, corpus=data, job=job, sink=sink), {"cpu": settings.threads}
    )
    experiment = layout.tune_experiment_dir(out_dir)
    if resume:
        return tune.Tuner.restore(
            str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
    scheduler: TrialScheduler
    if settings.early_stop:
        # Time is training seconds when the budget is in minutes, steps otherwise; rungs at a
        # ninth and a third of the budget, where the worse two thirds of the trials stop.
        if budget["minutes"] is not None:
            time_attr, max_t = "elapsed", budget["minutes"] * 60.0
        else:
            time_attr, max_t = "step", budget["steps"]
        scheduler = ASHAScheduler(
            time_attr=time_attr,
            max_t=max_t,
            grace_period=max_t / REDUCTION_FACTOR**RUNGS,
            reduction_factor=REDUCTION_FACTOR,
        )
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode="min",
        num_samples=settings.trials,
        scheduler=scheduler,
        # Random search; the generator itself limits the trials at once (Tune ignores
        # max_concurrent_trials when given a BasicVariantGenerator).
        search_alg=BasicVariantGenerator(random_state=settings.seed, max_concurrent=settings.concurrent or 0),
        # A finished or stopped trial's actor takes the next trial: no new process, no imports.
        reuse_actors=True,
        trial_name_creator=ray_parts.trial_name,
        trial_dirname_creator=ray_parts.trial_name,
    )
    run_config = tune.RunConfig(
        name=layout.EXPERIMENT_NAME,
        storage_path=str(experiment.parent),
        verbose=0,
        callbacks=[ray_parts.SweepCallback()],
        failure_config=tune.FailureConfig(max_failures=0),
    )
    param_space = {name: dim.to_tune() for name, dim in space.items()}
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _reconcile(records: dict, total: int) -> bool:
    """Marks trials that never ended as unfinished; True when the sweep did not complete."""
    for record in records.values():
        if record.status in (RUNNING, PENDING):
            record.status = UNFINISHED
    complete = sum(1 for r in records.values() if r.status in COMPLETE)
    return complete < total
