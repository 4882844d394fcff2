"""The training loop: truncated BPTT over char-rnn batches, evaluation, checkpoints, resume.

The library never prints: everything a user may want to see goes through the `on_event` callback.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from charrnn.atomic import file_sha256
from charrnn.corpus.text import load_corpus
from charrnn.errors import InputError, ModelFormatError, TrainingDiverged
from charrnn.kernels.threads import usable_cores
from charrnn.model import checkpoint
from charrnn.model.legacy import FORMAT1_CONFIG, format1_state, is_format1_state
from charrnn.model.params import init_params
from charrnn.model.vocab import Vocab
from charrnn.training import finetune
from charrnn.training.auto import MODEL_OPTIONS, SHAPES, choose
from charrnn.training.batches import BatchStreams, split_train_val
from charrnn.training.config import (
    DEFAULT_MINUTES,
    PROGRESS_SECONDS,
    Budget,
    TrainConfig,
    TrainEvent,
    TrainResult,
    learning_rate,
)
from charrnn.training.evaluate import estimate_bpc, estimate_kernels, exact_bpc
from charrnn.training.optim import Optimizer, clip_grad_norm
from charrnn.training.probe import Probe, machine_probe
from charrnn.training.state import TrainingState


class _StopOnSigint:
    """Turns the first Ctrl-C into a request to stop after the current step (a second one aborts)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _resolve_config(overrides: dict, saved: dict | None) -> TrainConfig:
    """A new run's config (the cell's defaults under the given settings; the model's shape is
    chosen later if no setting names it: see _Run._choose_model), or a resumed run's saved one,
    which the given settings must agree with."""
    if saved is None:
        config = TrainConfig.for_cell(**overrides)
    else:
        try:
            base = TrainConfig(**({**FORMAT1_CONFIG, **saved} if "cell" not in saved else saved))
        except TypeError as error:
            raise ModelFormatError(f"{checkpoint.STATE_FILE}: corrupt training record (config: {error})") from None
        changed = [k for k, v in overrides.items() if getattr(base, k) != v]
        if changed:
            shown = ", ".join(f"--{k.replace('_', '-')} {getattr(base, k)}" for k in changed)
            raise InputError(
                f"a resumed run keeps its settings ({shown}); drop those options or train a new model with --force"
            )
        config = base
    config.check()
    return config


def _check_arguments(overrides: dict, budget: Budget, threads: int | None) -> int:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise InputError(f"unknown training settings: {', '.join(sorted(unknown))}")
    budget.check()
    threads = threads or usable_cores()
    if threads < 1:
        raise InputError(f"--threads must be positive, got {threads}")
    return threads


def _total_steps(budget: Budget, steps_per_epoch: int) -> tuple[int | None, float | None]:
    """(the step limit, the time limit in seconds) a budget sets; None where it sets none."""
    total_steps = budget.steps
    if budget.epochs is not None:
        epoch_steps = math.ceil(budget.epochs * steps_per_epoch)
        total_steps = epoch_steps if total_steps is None else min(total_steps, epoch_steps)
    minutes = budget.minutes
    if minutes is None and total_steps is None:
        minutes = DEFAULT_MINUTES
    return total_steps, (minutes * 60.0 if minutes is not None else None)


class _Run:
    """One training run, new or resumed: its data, model, optimizer and counters, and the steps
    of training it (open, one step, a checkpoint, the finish)."""

    def __init__(
        self,
        text_path,
        out_dir: Path,
        overrides: dict,
        budget: Budget,
        resume: bool,
        force: bool,
        encoding: str,
        threads: int,
        emit,
        corpus_path=None,
        probe: Probe | None = None,
        init_from=None,
    ):
        self.out_dir, self.emit, self.threads = out_dir, emit, threads
        saved = self._previous(text_path, resume, force)
        # Fine-tuning (charrnn.training.finetune): the parent's shape, the union of the vocabularies.
        self.parent, self.parent_record = None, saved.parent if saved else None
        if init_from is not None:
            if resume:
                raise InputError(
                    "--init-from starts a new run; a resumed run already has its weights (drop --init-from)"
                )
            self.parent, self.parent_record = finetune.load_parent(init_from)
            overrides = finetune.carry_shape(self.parent, overrides)
        if saved is not None:
            text_path = text_path if text_path is not None else Path(saved.corpus["path"])
            encoding = saved.encoding or encoding
            if budget == Budget():  # no new budget given: finish the one the run started with
                budget = Budget(**saved.budget)
        self.budget, self.encoding = budget, encoding
        self.saved_threads = saved.threads if saved else None
        self.config = _resolve_config(overrides, saved.config if saved else None)
        self._read_text(Path(text_path), saved, corpus_path)
        self.total_steps, self.time_limit = _total_steps(budget, self.streams.steps_per_epoch)
        self.choice = saved.auto_choice if saved else None
        if saved is None and not any(name in overrides for name in MODEL_OPTIONS):
            self._choose_model(overrides, probe)
        config = self.config
        self.spec = config.spec(len(self.vocab))
        self.rng = np.random.default_rng(config.seed)
        self.params = init_params(self.spec, self.rng, np.float32, config.input_scale)
        if self.parent is not None:
            finetune.widen_params(self.parent, self.vocab, self.params)
        self.grads = self.params.zeros_like()
        start, stop = self.spec.input_span()
        self.optimizer = Optimizer(
            config.optimizer, self.params.flat.size, np.float32, lr_scales=((start, stop, config.input_lr_scale),)
        )
        self.state = np.zeros(self.spec.state_shape(config.batch_size), np.float32)  # (B, L, K, H)
        # Samples shown during training draw from a stream of their own: they never change
        # training, and a resumed run continues their stream.
        self.sample_rng = np.random.default_rng([config.seed, 1])
        self.step, self.elapsed_before, self.best = 0, 0.0, math.inf
        self.val_seconds = 0.0  # validation estimates of this session, within the budget
        self.final_val_seconds = 0.0  # the best model's exact score at the end
        if saved is not None:
            self._restore(saved)
        else:
            self._start_directory(force)
        self.last_val: float | None = None
        self.loss_since_eval = [0.0, 0]  # summed training loss and steps since the last eval
        self.rate_for_log: float | None = None

    # -- opening -------------------------------------------------------------------------------

    def _previous(self, text_path, resume: bool, force: bool) -> TrainingState | None:
        """The saved state a resumed run continues, or None for a new run (whose directory is checked)."""
        if resume:
            return TrainingState.load(self.out_dir)
        if text_path is None:
            raise InputError("give a text file to train on")
        existing = [n for n in (checkpoint.META_FILE, checkpoint.STATE_FILE) if (self.out_dir / n).exists()]
        if existing and not force:
            raise InputError(
                f"{self.out_dir} already holds a model; pass --resume to continue it or --force to replace it"
            )
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"{self.out_dir} exists and is not a directory")
        return None

    def _choose_model(self, overrides: dict, probe: Probe | None) -> None:
        """The model's shape and dropout for this budget, text and machine (charrnn.training.auto)."""
        config = self.config
        if self.time_limit is not None and probe is None:
            self.emit(TrainEvent("note", text="measuring this machine's training speed (once; cached)"))
            probe, _ = machine_probe(SHAPES, self.threads)
        choice = choose(
            self.time_limit, self.total_steps, len(self.train_ids), config.batch_size, config.seq_length, probe
        )
        self.config = TrainConfig.for_cell(**{**overrides, **choice.settings()})
        self.config.check()
        self.choice = choice.to_meta()
        self.emit(
            TrainEvent(
                "note", text=f"model: {choice.reason} (name --cell, --layers, --hidden or --dropout to choose yourself)"
            )
        )

    def _read_text(self, text_path: Path, saved: TrainingState | None, corpus_path=None) -> None:
        self.vocab, ids = load_corpus(text_path, self.encoding)
        if self.parent is not None or self.parent_record is not None:
            if self.parent is not None:
                vocab = finetune.union_vocab(self.parent.vocab, self.vocab)
            else:  # a resumed fine-tuning run: the vocabulary it saved
                assert saved is not None
                vocab = Vocab(tuple(saved.vocab))
            self.vocab, ids = vocab, finetune.remap_ids(ids, self.vocab, vocab)
        sha256 = file_sha256(text_path)
        if saved is not None and saved.corpus["sha256"] != sha256:
            raise InputError(
                f"{text_path} is not the text this model was trained on "
                f"(its sha256 differs from the one recorded in {self.out_dir})"
            )
        if saved is not None and tuple(saved.vocab) != self.vocab.chars:
            raise InputError(f"{text_path}: its vocabulary differs from the saved run's")
        self.train_ids, self.val_ids = split_train_val(ids, self.config.val_frac)
        self.streams = BatchStreams(self.train_ids, self.config.batch_size, self.config.seq_length)
        recorded = Path(corpus_path) if corpus_path is not None else text_path
        self.corpus = {
            "name": recorded.stem,
            "path": str(recorded.resolve()),
            "bytes": text_path.stat().st_size,
            "sha256": sha256,
        }

    def _restore(self, saved: TrainingState) -> None:
        try:
            arrays = saved.arrays
            if is_format1_state(arrays):
                arrays = format1_state(arrays, self.spec, self.state.shape)
            self.params.flat[...] = arrays["params"]
            self.optimizer.load_state_arrays(arrays, saved.optimizer_steps)
            self.state[...] = arrays["state"]
            self.rng.bit_generator.state = saved.rng_state
            if saved.sample_rng_state is not None:
                self.sample_rng.bit_generator.state = saved.sample_rng_state
            self.step, self.elapsed_before = saved.step, saved.elapsed
            self.best = saved.best_val_bpc
        except (KeyError, ValueError, TypeError) as error:
            raise ModelFormatError(
                f"{self.out_dir / checkpoint.STATE_FILE}: corrupt training state ({type(error).__name__}: {error})"
            ) from None
        try:  # a kill between writing the model and the state leaves the model the better record
            meta = checkpoint.read_meta(self.out_dir)
            self.best = min(self.best, meta.get("best_val_bpc_estimate", meta.get("best_val_bpc")) or math.inf)
        except ModelFormatError:  # killed before the first model was saved
            pass
        checkpoint.truncate_metrics(self.out_dir, self.step)
        checkpoint.remove_stale_temporaries(self.out_dir)

    def _start_directory(self, force: bool) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if force:
            for name in (checkpoint.MODEL_FILE, checkpoint.META_FILE, checkpoint.STATE_FILE, checkpoint.METRICS_FILE):
                (self.out_dir / name).unlink(missing_ok=True)

    # -- training ------------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        return self.streams.steps_per_epoch

    def progress(self, elapsed: float) -> float:
        """How far through the budget the run is, 0 to 1 (whichever limit is nearer)."""
        fractions = []
        if self.total_steps:
            fractions.append(self.step / self.total_steps)
        if self.time_limit:
            fractions.append(elapsed / self.time_limit)
        return max(fractions)

    def over_budget(self, elapsed: float) -> bool:
        return (self.total_steps is not None and self.step >= self.total_steps) or (
            self.time_limit is not None and elapsed >= self.time_limit
        )

    def train_step(self, kernels, elapsed: float) -> tuple[float, float]:
        """One window of every stream: gradient, clip, update. Returns (loss in nats, lr)."""
        config = self.config
        position = self.step % self.steps_per_epoch
        if position == 0:
            self.state[...] = 0.0  # a new epoch starts every stream from the beginning
        inputs, targets = self.streams.window(position)
        loss = kernels.loss_and_grad(
            self.params, inputs, targets, self.state, self.grads, seed=config.seed, step=self.step
        )
        norm = clip_grad_norm(self.grads.flat, config.clip)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise TrainingDiverged(
                f"the loss became {'NaN' if math.isnan(loss) else 'infinite'} at step {self.step + 1}; "
                f"the saved model in {self.out_dir} is untouched; try a lower --lr or --clip"
            )
        lr = learning_rate(config, self.progress(elapsed))
        self.optimizer.step(self.params.flat, self.grads.flat, lr)
        self.state[...] = kernels.state_last
        self.step += 1
        self.loss_since_eval[0] += loss
        self.loss_since_eval[1] += 1
        return loss, lr

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, elapsed: float, evaluate: bool, eval_kernels) -> None:
        """The training state; with `evaluate`, a validation first, the model if it is the best
        so far, and a line of metrics."""
        config = self.config
        if evaluate:
            started = time.perf_counter()
            self.last_val = estimate_bpc(eval_kernels, self.params, self.val_ids)
            self.val_seconds += time.perf_counter() - started
            if self.last_val < self.best:
                self.best = self.last_val
                checkpoint.save_model(
                    self.out_dir,
                    self.params,
                    self.vocab,
                    {
                        "step": self.step,
                        "best_val_bpc": self.best,
                        "val_bpc_method": "estimate",
                        "config": dataclasses.asdict(config),
                        "corpus": self.corpus,
                        "encoding": self.encoding,
                        "trained_seconds": round(elapsed, 3),
                        **({"auto_choice": self.choice} if self.choice else {}),
                        **({"parent": self.parent_record} if self.parent_record else {}),
                    },
                )
        TrainingState(
            arrays={"params": self.params.flat, "state": self.state, **self.optimizer.state_arrays()},
            step=self.step,
            elapsed=elapsed,
            best_val_bpc=self.best,
            optimizer_steps=self.optimizer.steps,
            rng_state=dict(self.rng.bit_generator.state),
            sample_rng_state=dict(self.sample_rng.bit_generator.state),
            config=dataclasses.asdict(config),
            corpus=self.corpus,
            encoding=self.encoding,
            vocab=list(self.vocab.chars),
            threads=self.threads,
            budget=dataclasses.asdict(self.budget),
            steps_per_epoch=self.steps_per_epoch,
            auto_choice=self.choice,
            parent=self.parent_record,
        ).save(self.out_dir)
        if evaluate:
            loss_sum, loss_count = self.loss_since_eval
            checkpoint.append_metrics(
                self.out_dir,
                {
                    "step": self.step,
                    "elapsed": round(elapsed, 3),
                    "train_loss": loss_sum / loss_count if loss_count else None,
                    "val_bpc": self.last_val,
                    "chars_per_sec": self.rate_for_log,
                },
            )
            self.loss_since_eval = [0.0, 0]
            self.emit(
                TrainEvent(
                    "eval",
                    step=self.step,
                    total_steps=self.total_steps,
                    epoch=self.step / self.steps_per_epoch,
                    val_bpc=self.last_val,
                    best_val_bpc=self.best,
                    elapsed=elapsed,
                )
            )

    def finish(self) -> float:
        """The best model's exact validation bpc (charrnn.training.evaluate.exact_bpc), written to
        its meta.json in place of the estimate it was chosen on (kept as best_val_bpc_estimate)."""
        meta = checkpoint.read_meta(self.out_dir)
        if meta.get("val_bpc_method") != "estimate":
            return float(meta.get("best_val_bpc") or self.best)
        started = time.perf_counter()
        model = checkpoint.load_model(self.out_dir)
        exact = exact_bpc(model.params, model.vocab, self.val_ids)
        self.final_val_seconds = time.perf_counter() - started
        checkpoint.write_meta(
            self.out_dir,
            {
                **meta,
                "best_val_bpc": exact,
                "val_bpc_method": "exact",
                "best_val_bpc_estimate": meta["best_val_bpc"],
                "validation_seconds": round(self.val_seconds, 3),  # the estimates', within the budget
                "final_validation_seconds": round(self.final_val_seconds, 3),
            },
        )
        return exact

    def sample(self, length: int) -> str:
        from charrnn.sampling import sample_text

        return sample_text(self.params, self.vocab, length, temperature=0.8, rng=self.sample_rng)


def _warm_up(run: _Run, kernels, eval_kernels, sample_every: int) -> None:
    """Compile (first run) or load (later runs) every kernel before the clock starts, so the
    budget, the throughput and the metrics' times count training only. Results are thrown away."""
    inputs, targets = run.streams.window(0)
    kernels.loss_and_grad(
        run.params, inputs, targets, run.state.copy(), run.grads.zeros_like(), seed=run.config.seed, step=run.step
    )
    one = np.zeros((eval_kernels.batch_size, 1), dtype=np.int32)  # (B, 1)
    eval_kernels.loss(run.params, one, one, np.zeros(run.spec.state_shape(eval_kernels.batch_size), np.float32))
    exact_bpc(run.params, run.vocab, run.val_ids[:2])
    if sample_every:
        from charrnn.sampling import sample_text

        sample_text(run.params, run.vocab, 1, rng=np.random.default_rng(0))


class _Progress:
    """The "step" events: throughput and ETA over the time since the last one, leaving out the
    time spent evaluating and saving."""

    def __init__(self, run: _Run):
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


def train(
    text_path: str | Path | None,
    out_dir: str | Path,
    *,
    overrides: dict | None = None,
    budget: Budget = Budget(),
    resume: bool = False,
    force: bool = False,
    encoding: str = "utf-8",
    threads: int | None = None,
    sample_every: int = 0,
    sample_length: int = 200,
    on_event: Callable[[TrainEvent], None] | None = None,
    corpus_path: str | Path | None = None,
    probe: Probe | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train (or resume training) a model on a text file; the model directory is `out_dir`.

    `overrides` are TrainConfig fields: for a new run, the rest come from the cell's defaults
    (CELL_DEFAULTS), and if none of cell, layers, hidden or dropout is given, the model is chosen
    for the budget, the text and this machine (charrnn.training.auto; `probe`, if given, stands for
    this machine's measured speeds); on resume they must agree with the saved run. `corpus_path`, for a run on
    a copy of the text (a sweep's trial on another machine), is the path the model records as
    its corpus, so that `--resume` finds the original. `init_from` (a model directory or a
    bundled model's name) starts a new run from that model's weights (charrnn.training.finetune).
    """
    emit = on_event or (lambda event: None)
    overrides = dict(overrides or {})
    threads = _check_arguments(overrides, budget, threads)
    run = _Run(
        text_path,
        Path(out_dir),
        overrides,
        budget,
        resume,
        force,
        encoding,
        threads,
        emit,
        corpus_path,
        probe,
        init_from,
    )
    from charrnn.kernels.window import Kernels  # imported late: it compiles or loads the kernels

    config = run.config
    kernels = Kernels(
        run.spec, config.batch_size, config.seq_length, np.float32, threads=threads, dropout=config.dropout
    )
    evaluator = estimate_kernels(run.spec, threads)
    emit(
        TrainEvent(
            "start",
            step=run.step,
            total_steps=run.total_steps,
            elapsed=run.elapsed_before,
            text=f"{run.spec.describe()}, {run.spec.n_params:,} parameters; "
            f"{len(run.train_ids):,} training and {len(run.val_ids):,} validation "
            f"characters, vocabulary of {len(run.vocab)}, "
            f"{run.steps_per_epoch:,} steps per epoch",
        )
    )
    if run.parent is not None:
        emit(TrainEvent("note", step=run.step, text=finetune.start_note(run.parent, run.vocab)))
    if run.saved_threads not in (None, threads):
        emit(
            TrainEvent(
                "note",
                step=run.step,
                text=(
                    f"note: this run was saved with --threads {run.saved_threads}; continuing with "
                    f"{threads} changes the rounding, so it will not match an uninterrupted run bit for bit"
                ),
            )
        )
    emit(TrainEvent("compiling", step=run.step, text="compiling or loading the kernels"))
    _warm_up(run, kernels, evaluator, sample_every)
    emit(TrainEvent("ready", step=run.step))
    start_step = run.step
    interrupted = False
    with _StopOnSigint() as stop:
        clock = time.perf_counter()
        progress = _Progress(run)
        while True:
            elapsed = run.elapsed_before + time.perf_counter() - clock
            if run.over_budget(elapsed):
                break
            if stop.requested:
                interrupted = True
                break
            loss, lr = run.train_step(kernels, elapsed)
            progress.after_step(loss, lr, run.elapsed_before + time.perf_counter() - clock, run.step == start_step + 1)
            evaluate_now = run.step % config.eval_every == 0
            sample_now = sample_every and run.step % sample_every == 0
            if evaluate_now or sample_now:
                pause_start = time.perf_counter()
                if evaluate_now:
                    run.save(run.elapsed_before + pause_start - clock, True, evaluator)
                if sample_now:
                    emit(TrainEvent("sample", step=run.step, text=run.sample(sample_length)))
                progress.paused += time.perf_counter() - pause_start
        elapsed = run.elapsed_before + time.perf_counter() - clock

    needs_model = not (run.out_dir / checkpoint.MODEL_FILE).exists()
    evaluated_now = run.step % config.eval_every == 0 and run.step > start_step
    if interrupted:
        run.save(elapsed, needs_model, evaluator)
        emit(TrainEvent("interrupted", step=run.step, elapsed=elapsed, best_val_bpc=run.best))
    elif not evaluated_now or needs_model:
        run.save(elapsed, True, evaluator)
    best = run.best
    if not interrupted:
        emit(TrainEvent("scoring", step=run.step, text="scoring the best model on the whole validation text"))
        best = run.finish()
    emit(
        TrainEvent(
            "done",
            step=run.step,
            total_steps=run.total_steps,
            elapsed=elapsed,
            val_bpc=run.last_val,
            best_val_bpc=best,
            val_seconds=run.val_seconds,
            final_val_seconds=run.final_val_seconds,
        )
    )
    return TrainResult(
        run.out_dir, run.step, best, run.last_val, elapsed, interrupted, run.val_seconds, run.final_val_seconds
    )
