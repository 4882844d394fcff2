"""`charrnn train`: the training loop with a progress display."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from charrnn.train import DEFAULT_MINUTES, Budget, TrainConfig, TrainEvent, default_threads, train

_DEFAULTS = TrainConfig()


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class _Display:
    """One updating line on a terminal, plain lines otherwise; evaluations always get their own line."""

    def __init__(self, stream, interactive: bool):
        self.stream = stream
        self.interactive = interactive
        self.open_line = False
        self.last_plain_step = -1

    def _line(self, text: str, transient: bool = False) -> None:
        if self.interactive and transient:
            self.stream.write("\r\x1b[K" + text)
            self.open_line = True
        else:
            if self.open_line:
                self.stream.write("\r\x1b[K")
                self.open_line = False
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "start":
            self._line(event.text)
        elif event.kind == "compiling" and event.step == 0:
            self._line("Preparing the compiled kernels (the first run compiles them once)...",
                       transient=True)
        elif event.kind == "step":
            total = f"/{event.total_steps:,}" if event.total_steps else ""
            best = f" | best val {event.best_val_bpc:.3f} bpc" if event.best_val_bpc else ""
            text = (f"step {event.step:,}{total} | epoch {event.epoch:.2f} | "
                    f"loss {event.train_loss / math.log(2):.3f} bpc{best} | "
                    f"{event.chars_per_sec:,.0f} chars/s | ETA {_duration(event.eta_seconds)}")
            if self.interactive:
                self._line(text, transient=True)
            elif event.step - self.last_plain_step >= 100 or self.last_plain_step < 0:
                self.last_plain_step = event.step
                self._line(text)
        elif event.kind == "eval":
            self._line(f"step {event.step:,} | validation {event.val_bpc:.4f} bpc "
                       f"(best {event.best_val_bpc:.4f}) | {_duration(event.elapsed)} elapsed")
        elif event.kind == "sample":
            self._line(f"--- sample at step {event.step:,} ---\n{event.text}\n---")


def _explicit(ctx: click.Context, names) -> dict:
    source = click.core.ParameterSource
    return {name: ctx.params[name] for name in names
            if ctx.get_parameter_source(name) not in (source.DEFAULT, source.DEFAULT_MAP)}


@click.command("train")
@click.argument("text_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Model directory.  [default: models/<text file stem>]")
@click.option("--hidden", type=int, default=_DEFAULTS.hidden, show_default=True,
              help="Hidden units (the size of h).")
@click.option("--seq-length", type=int, default=_DEFAULTS.seq_length, show_default=True,
              help="Characters per stream per step (the truncated-BPTT length).")
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True,
              help="Parallel streams per step.")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, help="Peak learning rate.")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default=_DEFAULTS.lr_schedule,
              show_default=True, help="cosine decays the rate to a tenth over the budget.")
@click.option("--optimizer", type=click.Choice(["adam", "rmsprop", "adagrad"]),
              default=_DEFAULTS.optimizer, show_default=True, help="Update rule.")
@click.option("--clip", type=float, default=_DEFAULTS.clip, show_default=True,
              help="Global gradient-norm clip (0 turns it off).")
@click.option("--steps", type=int, help="Budget: stop after this many steps in all.")
@click.option("--epochs", type=float, help="Budget: stop after this many passes over the training text.")
@click.option("--minutes", type=float,
              help=f"Budget: stop after this many minutes of training in all.  "
                   f"[default: {DEFAULT_MINUTES:g} when no budget is given]")
@click.option("--eval-every", type=int, default=_DEFAULTS.eval_every, show_default=True,
              help="Steps between validations (each one saves a checkpoint).")
@click.option("--val-frac", type=float, default=_DEFAULTS.val_frac, show_default=True,
              help="Fraction of the text, taken from its end, held out for validation.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Random seed: the same seed and thread count give the same model.")
@click.option("--threads", type=int, default=None,
              help="Worker threads (1 is the deterministic single-thread mode).  "
                   "[default: the cores available]")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of the text file.")
@click.option("--sample-every", type=int, default=0, show_default=True,
              help="Print a short sample every this many steps (0: never).")
@click.option("--resume", is_flag=True, help="Continue the run saved in the model directory.")
@click.option("--force", is_flag=True, help="Replace a model already in the model directory.")
@click.pass_context
def train_command(ctx, text_file, out_dir, steps, epochs, minutes, threads, encoding, sample_every,
                  resume, force, **_):
    """Train a character-level RNN on TEXT_FILE.

    The model directory then holds the best model by validation (model.npz, meta.json), the state
    needed to resume (training_state.npz) and a metrics log (metrics.jsonl).
    """
    if text_file is None and not (resume and out_dir):
        raise click.UsageError("give a TEXT_FILE (or --out DIR --resume)")
    if resume and force:
        raise click.UsageError("--resume and --force exclude each other")
    if out_dir is None:
        out_dir = Path("models") / text_file.stem
    config_names = [name for name in TrainConfig.__dataclass_fields__ if name in ctx.params]
    # A resumed run keeps its saved settings: only options typed on this command line are checked.
    overrides = _explicit(ctx, config_names) if resume else {n: ctx.params[n] for n in config_names}
    if sample_every < 0:
        raise click.BadParameter("must be 0 or positive", param_hint="--sample-every")
    display = _Display(sys.stdout, sys.stdout.isatty())
    result = train(text_file, out_dir, overrides=overrides, budget=Budget(steps, epochs, minutes),
                   resume=resume, force=force, encoding=encoding, threads=threads,
                   sample_every=sample_every, on_event=display)
    if result.interrupted:
        click.echo(f"Interrupted at step {result.step:,}; the checkpoint is saved. "
                   f"Resume with: charrnn train --out {out_dir} --resume", err=True)
        sys.exit(130)
    click.echo(f"Done: {result.step:,} steps, best validation {result.best_val_bpc:.4f} bpc; "
               f"model in {out_dir}")


COMMANDS = [train_command]
