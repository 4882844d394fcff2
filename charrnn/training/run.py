"""One training run, new or resumed: opening it (the directory checked, the saved state read back,
the text split, the model chosen, built or fine-tuned from a parent) and one step of training it.

What a run writes (its checkpoints and the final score) is in charrnn.training.saving; the loop
that drives it is charrnn.training.loop.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from charrnn.atomic import file_sha256
from charrnn.corpus.text import load_corpus
from charrnn.errors import InputError, ModelFormatError, TrainingDiverged
from charrnn.model import checkpoint
from charrnn.model.legacy import FORMAT1_CONFIG, format1_state, is_format1_state
from charrnn.model.params import init_params
from charrnn.model.vocab import Vocab
from charrnn.training import finetune
from charrnn.training.auto import MODEL_OPTIONS, SHAPES, choose
from charrnn.training.batches import BatchStreams, split_train_val
from charrnn.training.config import DEFAULT_MINUTES, Budget, TrainConfig, TrainEvent, learning_rate
from charrnn.training.optim import Optimizer, clip_grad_norm
from charrnn.training.probe import Probe, machine_probe
from charrnn.training.state import TrainingState


def _resolve_config(overrides: dict, saved: dict | None) -> TrainConfig:
    """A new run's config (the cell's defaults under the given settings; the model's shape is
    chosen later if no setting names it: see Run._choose_model), or a resumed run's saved one,
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


class Run:
    """One training run, new or resumed: its data, model, optimizer and counters, and the steps
    of training it (open, one step, a sample). Its checkpoints: charrnn.training.saving."""

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

    def sample(self, length: int) -> str:
        from charrnn.sampling import sample_text

        return sample_text(self.params, self.vocab, length, temperature=0.8, rng=self.sample_rng)
