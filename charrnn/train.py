"""The training loop: truncated BPTT over char-rnn batches, evaluation, checkpoints, resume.

The library never prints: everything a user may want to see goes through the `on_event` callback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from charrnn import checkpoint
from charrnn.batches import BatchStreams, split_train_val
from charrnn.errors import InputError, ModelFormatError, TrainingDiverged
from charrnn.optim import OPTIMIZERS, Optimizer, clip_grad_norm
from charrnn.params import Params, init_params
from charrnn.text import load_corpus

LN2 = math.log(2.0)
EVAL_CHUNK = 256          # characters per forward call when evaluating (hidden state carried)
PROGRESS_SECONDS = 0.5    # how often a "step" event is sent
DEFAULT_MINUTES = 10.0    # the budget when none is given


@dataclass(frozen=True)
class TrainConfig:
    """What defines a training run; stored in the model's metadata and fixed across resumes."""
    hidden: int = 1024
    seq_length: int = 64
    batch_size: int = 32
    lr: float = 2e-3
    optimizer: str = "adam"
    clip: float = 5.0
    lr_schedule: str = "cosine"      # "cosine": decay to lr * min_lr_frac over the budget; "constant"
    min_lr_frac: float = 0.1
    input_scale: float = 0.5         # standard deviation of the initial U
    input_lr_scale: float = 30.0     # U's learning rate relative to the others (its rows are sparse)
    val_frac: float = 0.05
    eval_every: int = 1000
    seed: int = 0

    def check(self) -> None:
        """InputError (one line) for values no run could use."""
        positive_ints = ("hidden", "seq_length", "batch_size", "eval_every")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a positive whole number, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.clip >= 0:
            raise InputError(f"--clip must be 0 (off) or positive, got {self.clip}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise InputError(f"--lr-schedule must be cosine or constant, got {self.lr_schedule!r}")
        if not 0 < self.min_lr_frac <= 1:
            raise InputError(f"min_lr_frac must be in (0, 1], got {self.min_lr_frac}")
        if not 0 < self.val_frac <= 0.5:
            raise InputError(f"--val-frac must be in (0, 0.5], got {self.val_frac}")
        if not self.input_scale > 0:
            raise InputError(f"input_scale must be positive, got {self.input_scale}")
        if not self.input_lr_scale > 0:
            raise InputError(f"input_lr_scale must be positive, got {self.input_lr_scale}")


@dataclass(frozen=True)
class Budget:
    """How long to train, counted over the whole run (a resumed run continues the same count).
    Training stops at whichever limit comes first; with none given, DEFAULT_MINUTES."""
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None

    def check(self) -> None:
        for name in ("steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"--{name} must be positive, got {value}")


@dataclass(frozen=True)
class TrainEvent:
    """kind: "start" | "note" | "compiling" | "ready" | "step" | "eval" | "sample" | "saved" | "interrupted" | "done"."""
    kind: str
    step: int = 0
    total_steps: int | None = None
    epoch: float = 0.0
    train_loss: float | None = None        # nats per character, averaged since the last step event
    val_bpc: float | None = None
    best_val_bpc: float | None = None
    chars_per_sec: float | None = None
    elapsed: float = 0.0                   # training seconds, over the whole run
    eta_seconds: float | None = None
    lr: float | None = None
    text: str = ""                         # a sample, or a message


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int
    best_val_bpc: float
    last_val_bpc: float | None
    elapsed: float
    interrupted: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def evaluate_bpc(kernels, params: Params, ids: np.ndarray) -> float:
    """Bits per character over a whole text, the hidden state carried from start to end."""
    h = np.zeros((1, params.hidden), dtype=params.dtype)                   # (1, H)
    total_nats = 0.0
    for start in range(0, len(ids) - 1, EVAL_CHUNK):
        segment = ids[start:start + EVAL_CHUNK + 1].astype(np.int32)
        inputs, targets = segment[None, :-1], segment[None, 1:]              # (1, T')
        total_nats += kernels.loss(params, inputs, targets, h) * inputs.shape[1]
        h[...] = kernels.h_last
    return total_nats / (len(ids) - 1) / LN2


def learning_rate(config: TrainConfig, progress: float) -> float:
    """Cosine decay from lr to lr * min_lr_frac as `progress` goes from 0 to 1."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(max(progress, 0.0), 1.0)
    floor = config.lr * config.min_lr_frac
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * progress))


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
    if saved is None:
        config = TrainConfig(**overrides)
    else:
        base = TrainConfig(**saved)
        changed = [k for k, v in overrides.items() if getattr(base, k) != v]
        if changed:
            shown = ", ".join(f"--{k.replace('_', '-')} {getattr(base, k)}" for k in changed)
            raise InputError(f"a resumed run keeps its settings ({shown}); drop those options "
                             "or train a new model with --force")
        config = base
    config.check()
    return config


def train(text_path: str | Path | None, out_dir: str | Path, *, overrides: dict | None = None,
          budget: Budget = Budget(), resume: bool = False, force: bool = False,
          encoding: str = "utf-8", threads: int | None = None, sample_every: int = 0,
          sample_length: int = 200, on_event: Callable[[TrainEvent], None] | None = None) -> TrainResult:
    """Train (or resume training) a model on a text file; the model directory is `out_dir`.

    `overrides` are TrainConfig fields; on resume they must agree with the saved run.
    """
    emit = on_event or (lambda event: None)
    out_dir = Path(out_dir)
    overrides = dict(overrides or {})
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise InputError(f"unknown training settings: {', '.join(sorted(unknown))}")
    budget.check()
    threads = threads or default_threads()
    if threads < 1:
        raise InputError(f"--threads must be positive, got {threads}")

    state_arrays, info = None, None
    if resume:
        state_arrays, info = checkpoint.load_training_state(out_dir)
        saved_text = Path(info["corpus"]["path"])
        if text_path is None:
            text_path = saved_text
        encoding = info.get("encoding", encoding)
        if budget == Budget():  # no new budget given: finish the one the run started with
            budget = Budget(**info["budget"])
    else:
        if text_path is None:
            raise InputError("give a text file to train on")
        existing = [n for n in (checkpoint.META_FILE, checkpoint.STATE_FILE) if (out_dir / n).exists()]
        if existing and not force:
            raise InputError(f"{out_dir} already holds a model; pass --resume to continue it "
                             "or --force to replace it")
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"{out_dir} exists and is not a directory")
    config = _resolve_config(overrides, info["config"] if info else None)

    text_path = Path(text_path)
    vocab, ids = load_corpus(text_path, encoding)
    sha256 = file_sha256(text_path)
    if info is not None and info["corpus"]["sha256"] != sha256:
        raise InputError(f"{text_path} is not the text this model was trained on "
                         f"(its sha256 differs from the one recorded in {out_dir})")
    train_ids, val_ids = split_train_val(ids, config.val_frac)
    streams = BatchStreams(train_ids, config.batch_size, config.seq_length)
    steps_per_epoch = streams.steps_per_epoch

    from charrnn.kernels import RNNKernels  # imported late: it compiles or loads the kernels

    rng = np.random.default_rng(config.seed)
    params = init_params(len(vocab), config.hidden, rng, np.float32, config.input_scale)
    grads = params.zeros_like()
    optimizer = Optimizer(config.optimizer, params.flat.size, np.float32,
                          lr_scales=((0, params.U.size, config.input_lr_scale),))  # U leads the buffer
    h = np.zeros((config.batch_size, config.hidden), dtype=np.float32)  # (B, H) carried state
    step, elapsed_before, best = 0, 0.0, math.inf
    if info is not None:
        if tuple(info["vocab"]) != vocab.chars:
            raise InputError(f"{text_path}: its vocabulary differs from the saved run's")
        params.flat[...] = state_arrays["params"]
        optimizer.load_state_arrays(state_arrays, info["optimizer_steps"])
        h[...] = state_arrays["hidden"]
        rng.bit_generator.state = info["rng_state"]
        step, elapsed_before, best = info["step"], info["elapsed"], info["best_val_bpc"] or math.inf
        try:  # a kill between writing the model and the state leaves the model the better record
            best = min(best, checkpoint.read_meta(out_dir).get("best_val_bpc") or math.inf)
        except ModelFormatError:  # killed before the first model was saved
            pass
        checkpoint.truncate_metrics(out_dir, step)
        checkpoint.remove_stale_temporaries(out_dir)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        if force:
            for name in (checkpoint.MODEL_FILE, checkpoint.META_FILE, checkpoint.STATE_FILE,
                         checkpoint.METRICS_FILE):
                (out_dir / name).unlink(missing_ok=True)

    total_steps = None
    if budget.steps is not None:
        total_steps = budget.steps
    if budget.epochs is not None:
        epoch_steps = math.ceil(budget.epochs * steps_per_epoch)
        total_steps = epoch_steps if total_steps is None else min(total_steps, epoch_steps)
    minutes = budget.minutes
    if minutes is None and total_steps is None:
        minutes = DEFAULT_MINUTES
    time_limit = minutes * 60.0 if minutes is not None else None

    corpus = {"name": text_path.stem, "path": str(text_path.resolve()), "bytes": text_path.stat().st_size,
              "sha256": sha256}
    kernels = RNNKernels(len(vocab), config.hidden, config.batch_size, config.seq_length,
                         np.float32, threads)
    eval_kernels = RNNKernels(len(vocab), config.hidden, 1, EVAL_CHUNK, np.float32, 1)
    sample_rng = np.random.default_rng([config.seed, 1])  # its own stream: samples never change training

    def progress_fraction(elapsed: float) -> float:
        fractions = []
        if total_steps:
            fractions.append(step / total_steps)
        if time_limit:
            fractions.append(elapsed / time_limit)
        return max(fractions)

    last_val = None

    def save(elapsed: float, evaluate: bool) -> None:
        nonlocal best, last_val
        if evaluate:
            last_val = evaluate_bpc(eval_kernels, params, val_ids)
            improved = last_val < best
            if improved:
                best = last_val
                checkpoint.save_model(out_dir, params, vocab, {
                    "step": step, "best_val_bpc": best, "config": dataclasses.asdict(config),
                    "corpus": corpus, "encoding": encoding, "trained_seconds": round(elapsed, 3)})
        checkpoint.save_training_state(out_dir, {
            "params": params.flat, "hidden": h, **optimizer.state_arrays()}, {
            "step": step, "elapsed": elapsed, "best_val_bpc": None if math.isinf(best) else best,
            "optimizer_steps": optimizer.steps, "rng_state": rng.bit_generator.state,
            "config": dataclasses.asdict(config), "corpus": corpus, "encoding": encoding,
            "vocab": list(vocab.chars), "threads": threads, "budget": dataclasses.asdict(budget), "steps_per_epoch": steps_per_epoch})
        if evaluate:
            checkpoint.append_metrics(out_dir, {
                "step": step, "elapsed": round(elapsed, 3),
                "train_loss": eval_loss_sum / eval_loss_count if eval_loss_count else None,
                "val_bpc": last_val, "chars_per_sec": window_rate_for_log})
            reset_eval_window()
            emit(TrainEvent("eval", step=step, total_steps=total_steps, epoch=step / steps_per_epoch,
                            val_bpc=last_val, best_val_bpc=best, elapsed=elapsed))

    emit(TrainEvent("start", step=step, total_steps=total_steps, elapsed=elapsed_before,
                    text=f"{len(train_ids):,} training and {len(val_ids):,} validation characters, "
                         f"vocabulary of {len(vocab)}, {steps_per_epoch:,} steps per epoch"))
    if info is not None and info.get("threads") not in (None, threads):
        emit(TrainEvent("note", step=step, text=(
            f"note: this run was saved with --threads {info['threads']}; continuing with {threads} "
            "changes the rounding, so it will not match an uninterrupted run bit for bit")))
    window_rate_for_log = None
    eval_loss_sum, eval_loss_count = 0.0, 0   # training loss since the last evaluation, for the log

    def reset_eval_window():
        nonlocal eval_loss_sum, eval_loss_count
        eval_loss_sum, eval_loss_count = 0.0, 0
    loss_sum, loss_count, report_chars = 0.0, 0, 0
    interrupted = False
    chars_per_step = config.batch_size * config.seq_length
    start_step = step
    # Compile (first run) or load (later runs) every kernel before the clock starts, so the budget,
    # the throughput and the metrics' times count training only. The results are thrown away.
    emit(TrainEvent("compiling", step=step, text="compiling or loading the kernels"))
    warm_inputs, warm_targets = streams.window(0)
    kernels.loss_and_grad(params, warm_inputs, warm_targets, h.copy(), grads)
    evaluate_bpc(eval_kernels, params, val_ids[:2])
    if sample_every:
        from charrnn.sampling import sample_text
        sample_text(params, vocab, 1, rng=np.random.default_rng(0))
    emit(TrainEvent("ready", step=step))
    with _StopOnSigint() as stop:
        clock = time.perf_counter()
        report_clock = clock
        paused = 0.0   # time spent evaluating and saving, left out of the throughput figure
        while True:
            elapsed = elapsed_before + time.perf_counter() - clock
            if (total_steps is not None and step >= total_steps) or \
                    (time_limit is not None and elapsed >= time_limit):
                break
            if stop.requested:
                interrupted = True
                break
            position = step % steps_per_epoch
            if position == 0:
                h[...] = 0.0  # a new epoch starts every stream from the beginning
            inputs, targets = streams.window(position)
            loss = kernels.loss_and_grad(params, inputs, targets, h, grads)
            norm = clip_grad_norm(grads.flat, config.clip)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                raise TrainingDiverged(
                    f"the loss became {'NaN' if math.isnan(loss) else 'infinite'} at step {step + 1}; "
                    f"the saved model in {out_dir} is untouched; try a lower --lr or --clip")
            lr = learning_rate(config, progress_fraction(elapsed))
            optimizer.step(params.flat, grads.flat, lr)
            h[...] = kernels.h_last
            step += 1
            loss_sum += loss
            loss_count += 1
            eval_loss_sum += loss
            eval_loss_count += 1
            report_chars += chars_per_step

            now = time.perf_counter()
            if now - report_clock >= PROGRESS_SECONDS or step == start_step + 1:
                rate = report_chars / max(now - report_clock - paused, 1e-9)
                elapsed = elapsed_before + now - clock
                eta = None
                if total_steps is not None:
                    eta = (total_steps - step) * chars_per_step / rate
                if time_limit is not None:
                    eta = min(eta if eta is not None else math.inf, time_limit - elapsed)
                window_rate_for_log = round(rate, 1)
                emit(TrainEvent("step", step=step, total_steps=total_steps,
                                epoch=step / steps_per_epoch, train_loss=loss_sum / loss_count,
                                best_val_bpc=None if math.isinf(best) else best, chars_per_sec=rate,
                                elapsed=elapsed, eta_seconds=max(eta, 0.0) if eta is not None else None,
                                lr=lr))
                loss_sum, loss_count, report_chars, paused = 0.0, 0, 0, 0.0
                report_clock = now
            if step % config.eval_every == 0 or (sample_every and step % sample_every == 0):
                pause_start = time.perf_counter()
                if step % config.eval_every == 0:
                    save(elapsed_before + pause_start - clock, evaluate=True)
                if sample_every and step % sample_every == 0:
                    from charrnn.sampling import sample_text
                    emit(TrainEvent("sample", step=step, text=sample_text(
                        params, vocab, sample_length, temperature=0.8, rng=sample_rng)))
                paused += time.perf_counter() - pause_start
        elapsed = elapsed_before + time.perf_counter() - clock

    needs_model = not (out_dir / checkpoint.MODEL_FILE).exists()
    evaluated_now = step % config.eval_every == 0 and step > start_step
    if interrupted:
        save(elapsed, evaluate=needs_model)
        emit(TrainEvent("interrupted", step=step, elapsed=elapsed, best_val_bpc=best))
    elif not evaluated_now or needs_model:
        save(elapsed, evaluate=True)
    emit(TrainEvent("done", step=step, total_steps=total_steps, elapsed=elapsed, val_bpc=last_val,
                    best_val_bpc=best))
    return TrainResult(out_dir, step, best, last_val, elapsed, interrupted)
