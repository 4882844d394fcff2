"""What a training run writes: at each checkpoint the training state (what --resume needs) and,
after a validation, the model if it is the best so far and a line of metrics; at the end, the best
model's exact validation score in its meta.json.

The run itself (its arrays and counters, which these functions read and update) is
charrnn.training.run.Run; charrnn.training.loop decides when to call them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from charrnn.model import checkpoint
from charrnn.training.config import TrainEvent
from charrnn.training.evaluate import estimate_bpc, exact_bpc
from charrnn.training.state import TrainingState

if TYPE_CHECKING:
    from charrnn.training.run import Run


def save_checkpoint(run: Run, elapsed: float, evaluate: bool, eval_kernels) -> None:
    """The training state; with `evaluate`, a validation first, the model if it is the best
    so far, and a line of metrics."""
    if evaluate:
        _validate(run, elapsed, eval_kernels)
    _save_state(run, elapsed)
    if evaluate:
        _record_validation(run, elapsed)


def _validate(run: Run, elapsed: float, eval_kernels) -> None:
    """The validation estimate (its time counted in run.val_seconds); the model if it is the best."""
    started = time.perf_counter()
    run.last_val = estimate_bpc(eval_kernels, run.params, run.val_ids)
    run.val_seconds += time.perf_counter() - started
    if run.last_val < run.best:
        run.best = run.last_val
        checkpoint.save_model(
            run.out_dir,
            run.params,
            run.vocab,
            {
                "step": run.step,
                "best_val_bpc": run.best,
                "val_bpc_method": "estimate",
                "config": dataclasses.asdict(run.config),
                "corpus": run.corpus,
                "encoding": run.encoding,
                "trained_seconds": round(elapsed, 3),
                **({"auto_choice": run.choice} if run.choice else {}),
                **({"parent": run.parent_record} if run.parent_record else {}),
            },
        )


def _save_state(run: Run, elapsed: float) -> None:
    TrainingState(
        arrays={"params": run.params.flat, "state": run.state, **run.optimizer.state_arrays()},
        step=run.step,
        elapsed=elapsed,
        best_val_bpc=run.best,
        optimizer_steps=run.optimizer.steps,
        rng_state=dict(run.rng.bit_generator.state),
        sample_rng_state=dict(run.sample_rng.bit_generator.state),
        config=dataclasses.asdict(run.config),
        corpus=run.corpus,
        encoding=run.encoding,
        vocab=list(run.vocab.chars),
        threads=run.threads,
        budget=dataclasses.asdict(run.budget),
        steps_per_epoch=run.steps_per_epoch,
        auto_choice=run.choice,
        parent=run.parent_record,
    ).save(run.out_dir)


def _record_validation(run: Run, elapsed: float) -> None:
    """The metrics line of the validation just made, and its "eval" event."""
    loss_sum, loss_count = run.loss_since_eval
    checkpoint.append_metrics(
        run.out_dir,
        {
            "step": run.step,
            "elapsed": round(elapsed, 3),
            "train_loss": loss_sum / loss_count if loss_count else None,
            "val_bpc": run.last_val,
            "chars_per_sec": run.rate_for_log,
        },
    )
    run.loss_since_eval = [0.0, 0]
    run.emit(
        TrainEvent(
            "eval",
            step=run.step,
            total_steps=run.total_steps,
            epoch=run.step / run.steps_per_epoch,
            val_bpc=run.last_val,
            best_val_bpc=run.best,
            elapsed=elapsed,
        )
    )


def score_best(run: Run) -> float:
    """The best model's exact validation bpc (charrnn.training.evaluate.exact_bpc), written to
    its meta.json in place of the estimate it was chosen on (kept as best_val_bpc_estimate)."""
    meta = checkpoint.read_meta(run.out_dir)
    if meta.get("val_bpc_method") != "estimate":
        return float(meta.get("best_val_bpc") or run.best)
    started = time.perf_counter()
    model = checkpoint.load_model(run.out_dir)
    exact = exact_bpc(model.params, model.vocab, run.val_ids)
    run.final_val_seconds = time.perf_counter() - started
    checkpoint.write_meta(
        run.out_dir,
        {
            **meta,
            "best_val_bpc": exact,
            "val_bpc_method": "exact",
            "best_val_bpc_estimate": meta["best_val_bpc"],
            "validation_seconds": round(run.val_seconds, 3),  # the estimates', within the budget
            "final_validation_seconds": round(run.final_val_seconds, 3),
        },
    )
    return exact
