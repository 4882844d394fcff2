"""The training loop: truncated BPTT over char-rnn batches, evaluation, checkpoints, resume.

`train` opens a run (charrnn.training.run), compiles or loads the kernels, then steps until the
budget is spent or Ctrl-C, with validations, checkpoints (charrnn.training.saving), samples and
progress events (charrnn.training.progress) on their schedules.

The library never prints: everything a user may want to see goes through the `on_event` callback.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from charrnn.errors import InputError
from charrnn.kernels.threads import usable_cores
from charrnn.model import checkpoint
from charrnn.training import finetune
from charrnn.training.config import Budget, TrainConfig, TrainEvent, TrainResult
from charrnn.training.evaluate import estimate_kernels, exact_bpc
from charrnn.training.probe import Probe
from charrnn.training.progress import Progress
from charrnn.training.run import Run
from charrnn.training.saving import save_checkpoint, score_best


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


def _check_arguments(overrides: dict, budget: Budget, threads: int | None) -> int:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise InputError(f"unknown training settings: {', '.join(sorted(unknown))}")
    budget.check()
    threads = threads or usable_cores()
    if threads < 1:
        raise InputError(f"--threads must be positive, got {threads}")
    return threads


def _warm_up(run: Run, kernels, eval_kernels, sample_every: int) -> None:
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
    run = Run(
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
    _announce(run, threads)
    emit(TrainEvent("compiling", step=run.step, text="compiling or loading the kernels"))
    _warm_up(run, kernels, evaluator, sample_every)
    emit(TrainEvent("ready", step=run.step))
    start_step = run.step
    elapsed, interrupted = _train_steps(run, kernels, evaluator, sample_every, sample_length)
    best = _close(run, evaluator, elapsed, interrupted, start_step)
    return TrainResult(
        run.out_dir, run.step, best, run.last_val, elapsed, interrupted, run.val_seconds, run.final_val_seconds
    )


def _announce(run: Run, threads: int) -> None:
    """The "start" event (the model and the text) and the notes on how this run starts."""
    emit = run.emit
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


def _train_steps(run: Run, kernels, evaluator, sample_every: int, sample_length: int) -> tuple[float, bool]:
    """Steps until the budget is spent or Ctrl-C asks to stop, with the validations, checkpoints
    and samples due after each (their time left out of the throughput). Returns (the elapsed
    training seconds, whether Ctrl-C stopped the run)."""
    start_step = run.step
    interrupted = False
    with _StopOnSigint() as stop:
        clock = time.perf_counter()
        progress = Progress(run)
        while True:
            elapsed = run.elapsed_before + time.perf_counter() - clock
            if run.over_budget(elapsed):
                break
            if stop.requested:
                interrupted = True
                break
            loss, lr = run.train_step(kernels, elapsed)
            progress.after_step(loss, lr, run.elapsed_before + time.perf_counter() - clock, run.step == start_step + 1)
            evaluate_now = run.step % run.config.eval_every == 0
            sample_now = sample_every and run.step % sample_every == 0
            if evaluate_now or sample_now:
                pause_start = time.perf_counter()
                if evaluate_now:
                    save_checkpoint(run, run.elapsed_before + pause_start - clock, True, evaluator)
                if sample_now:
                    run.emit(TrainEvent("sample", step=run.step, text=run.sample(sample_length)))
                progress.paused += time.perf_counter() - pause_start
        elapsed = run.elapsed_before + time.perf_counter() - clock
    return elapsed, interrupted


def _close(run: Run, evaluator, elapsed: float, interrupted: bool, start_step: int) -> float:
    """The last checkpoint (with a validation unless the last step had one, or, when interrupted,
    only if there is no model yet), the best model's exact score (unless interrupted) and the
    "done" event. Returns the best validation bpc."""
    needs_model = not (run.out_dir / checkpoint.MODEL_FILE).exists()
    evaluated_now = run.step % run.config.eval_every == 0 and run.step > start_step
    if interrupted:
        save_checkpoint(run, elapsed, needs_model, evaluator)
        run.emit(TrainEvent("interrupted", step=run.step, elapsed=elapsed, best_val_bpc=run.best))
    elif not evaluated_now or needs_model:
        save_checkpoint(run, elapsed, True, evaluator)
    best = run.best
    if not interrupted:
        run.emit(TrainEvent("scoring", step=run.step, text="scoring the best model on the whole validation text"))
        best = score_best(run)
    run.emit(
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
    return best
