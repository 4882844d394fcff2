"""`charrnn train`: the training loop with a progress display."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import click

from charrnn.errors import InputError
from charrnn.kernels.threads import usable_cores
from charrnn.model import checkpoint
from charrnn.model.spec import CELLS
from charrnn.training.config import CELL_DEFAULTS, DEFAULT_MINUTES, Budget, TrainConfig, TrainEvent

_DEFAULTS = TrainConfig()


def _per_cell(name: str) -> str:
    """The help's default for a setting whose default depends on the cell."""
    return "[default: " + ", ".join(f"{cell} {CELL_DEFAULTS[cell][name]:g}" for cell in CELLS) + "]"


KERNELS_MESSAGE = "Preparing the compiled kernels (the first run compiles them, once)"
KERNELS_QUIET_SECONDS = 1.0  # on a terminal, a load faster than this leaves no line behind


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class _Display:
    """One updating line on a terminal, plain lines otherwise; evaluations always get their own line.

    Training waits for the kernels: compiled on the very first run (seconds), loaded from the
    cache afterwards (a blink). "Preparing the compiled kernels... " stays open until they are
    ready, then says how long it took; on a terminal a quick load just wipes it.
    """

    def __init__(self, stream, interactive: bool, clock=time.perf_counter):
        self.stream = stream
        self.interactive = interactive
        self.clock = clock
        self.open_line = False  # the cursor is after text with no newline yet
        self.last_plain_step = -1
        self.kernels_since: float | None = None  # when the kernels line was opened

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _line(self, text: str, transient: bool = False) -> None:
        if self.kernels_since is not None:
            self._kernels_ready()
        if self.interactive:
            self._write("\r\x1b[K" + text + ("" if transient else "\n"))
            self.open_line = transient
        else:
            self._write(text + "\n")

    def _kernels_ready(self) -> None:
        seconds = self.clock() - self.kernels_since
        self.kernels_since = None
        self.open_line = False
        if self.interactive and seconds < KERNELS_QUIET_SECONDS:
            self._write("\r\x1b[K")
        else:
            self._write(f"done in {seconds:.1f} s\n")

    def close(self) -> None:
        """Ends an open line, so what follows (a message, the shell prompt) starts on its own."""
        if self.open_line:
            self._write("\n")
            self.open_line = False
            self.kernels_since = None

    def __call__(self, event: TrainEvent) -> None:
        if event.kind in ("start", "note", "scoring"):
            self._line(event.text)
        elif event.kind == "compiling":
            self._write("\r\x1b[K" if self.interactive else "\n" if self.open_line else "")
            self._write(KERNELS_MESSAGE + "... ")
            self.open_line = True
            self.kernels_since = self.clock()
        elif event.kind == "ready":
            if self.kernels_since is not None:
                self._kernels_ready()
        elif event.kind == "step" and event.train_loss is not None:
            total = f"/{event.total_steps:,}" if event.total_steps else ""
            best = f" | best val {event.best_val_bpc:.3f} bpc" if event.best_val_bpc else ""
            text = (
                f"step {event.step:,}{total} | epoch {event.epoch:.2f} | "
                f"loss {event.train_loss / math.log(2):.3f} bpc{best} | "
                f"{event.chars_per_sec:,.0f} chars/s | ETA {_duration(event.eta_seconds)}"
            )
            if self.interactive:
                self._line(text, transient=True)
            elif event.step - self.last_plain_step >= 100 or self.last_plain_step < 0:
                self.last_plain_step = event.step
                self._line(text)
        elif event.kind == "eval":
            self._line(
                f"step {event.step:,} | validation {event.val_bpc:.4f} bpc "
                f"(best {event.best_val_bpc:.4f}) | {_duration(event.elapsed)} elapsed"
            )
        elif event.kind == "sample":
            self._line(f"--- sample at step {event.step:,} ---\n{event.text}\n---")


def _explicit(ctx: click.Context, names) -> dict:
    source = click.core.ParameterSource
    return {
        name: ctx.params[name]
        for name in names
        if ctx.get_parameter_source(name) not in (source.DEFAULT, source.DEFAULT_MAP)
    }


@click.command("train")
@click.argument("text_file", required=False, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory (created if missing).  [default: models/<TEXT_FILE's name without its suffix>]",
)
@click.option(
    "--cell",
    type=click.Choice(CELLS),
    default=None,
    help="The recurrent cell: vanilla rnn, lstm or gru. Each has defaults of its own "
    "for --layers, --hidden, --dropout and --lr.  [default: with none of --cell, "
    "--layers, --hidden, --dropout given, the model is chosen for the budget, the "
    "text and this machine (an LSTM); otherwise lstm]",
)
@click.option(
    "--layers",
    type=int,
    default=None,
    help="Recurrent layers stacked, each reading the one below.  " + _per_cell("layers"),
)
@click.option(
    "--hidden",
    type=int,
    default=None,
    help="Hidden units per layer: the size of each layer's state h.  " + _per_cell("hidden"),
)
@click.option(
    "--dropout",
    type=float,
    default=None,
    help="Fraction of units dropped (inverted dropout) between layers and before the "
    "output layer while training, in [0, 1); never in validation or sampling.  " + _per_cell("dropout"),
)
@click.option(
    "--seq-length",
    type=int,
    default=_DEFAULTS.seq_length,
    show_default=True,
    help="Characters each stream reads per step; gradients flow back this far (truncated BPTT).",
)
@click.option(
    "--batch-size",
    type=int,
    default=_DEFAULTS.batch_size,
    show_default=True,
    help="Streams the training text is cut into, trained side by side in every step.",
)
@click.option("--lr", type=float, default=None, help="Peak learning rate (per step).  " + _per_cell("lr"))
@click.option(
    "--lr-schedule",
    type=click.Choice(["cosine", "constant"]),
    default=_DEFAULTS.lr_schedule,
    show_default=True,
    help="cosine decays the rate to a tenth of --lr over the budget; constant keeps it.",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "rmsprop", "adagrad"]),
    default=_DEFAULTS.optimizer,
    show_default=True,
    help="Update rule.",
)
@click.option(
    "--clip",
    type=float,
    default=_DEFAULTS.clip,
    show_default=True,
    help="Largest norm (L2, over all weights) of a step's gradient; larger ones are "
    "scaled down to it (0: no clipping).",
)
@click.option("--steps", type=int, help="Budget: steps in all, resumes included.  [default: no step limit]")
@click.option(
    "--epochs",
    type=float,
    help="Budget: passes over the training text in all, resumes included; fractions "
    "are fine.  [default: no epoch limit]",
)
@click.option(
    "--minutes",
    type=float,
    help=f"Budget: minutes of training in all, resumes included; the first limit "
    f"reached stops the run.  [default: {DEFAULT_MINUTES:g} if no budget is given]",
)
@click.option(
    "--eval-every",
    type=int,
    default=_DEFAULTS.eval_every,
    show_default=True,
    help="Steps between validations; each one saves a checkpoint.",
)
@click.option(
    "--val-frac",
    type=float,
    default=_DEFAULTS.val_frac,
    show_default=True,
    help="Fraction of the text, taken from its end, held out for validation; in (0, 0.5].",
)
@click.option(
    "--seed",
    type=int,
    default=_DEFAULTS.seed,
    show_default=True,
    help="Random seed: under a --steps or --epochs budget, the same seed and thread "
    "count give the same model, bit for bit (under --minutes the learning-rate "
    "schedule follows the clock).",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help=f"Worker threads, 1 or more.  [default: the cores available, here {usable_cores()}]",
)
@click.option(
    "--encoding", default="utf-8", show_default=True, help="Encoding of TEXT_FILE, e.g. utf-8, latin-1, cp1252."
)
@click.option(
    "--sample-every",
    type=int,
    default=0,
    show_default=True,
    help="Steps between the samples printed as the model learns (0: no samples).",
)
@click.option(
    "--init-from",
    "init_from",
    metavar="MODEL",
    help="Fine-tune: start from MODEL's weights (a model directory or a bundled "
    "model's name). Its cell, layers and hidden size carry over; the vocabulary "
    "becomes the union of its characters and the text's.  [default: new weights]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run saved in --out, on its text, with its settings and (unless "
    "a new one is given) its budget.  [default: off]",
)
@click.option("--force", is_flag=True, help="Replace a model already in --out.  [default: off]")
@click.pass_context
def train_command(
    ctx, text_file, out_dir, steps, epochs, minutes, threads, encoding, sample_every, resume, force, init_from, **_
):
    """Train a character-level RNN (vanilla, LSTM or GRU) on TEXT_FILE.

    The model directory then holds the best model by validation (model.npz, meta.json), the state
    needed to resume (training_state.npz) and a metrics log (metrics.jsonl).

    \b
        charrnn train corpora/tiny-shakespeare.txt --minutes 10
        charrnn train corpora/tiny-shakespeare.txt --cell lstm --out models/lstm
        charrnn train --out models/tiny-shakespeare --resume --minutes 15
        charrnn train corpora/sonnets.txt --init-from shakespeare-lstm --minutes 2
    """
    if text_file is None and not (resume and out_dir):
        raise click.UsageError("give a TEXT_FILE to train on (or --out MODEL_DIR --resume to continue a run)")
    if resume and init_from is not None:
        raise click.UsageError(
            "--init-from starts a new run from a model's weights and --resume continues a saved run: give one of them"
        )
    if resume and force:
        raise click.UsageError("--resume continues the model in --out and --force replaces it: give one of them")
    config_names = [name for name in TrainConfig.__dataclass_fields__ if name in ctx.params]
    # Only options typed on this command line: a new run takes the rest from its cell's defaults,
    # and a resumed run keeps its saved settings (the typed ones are checked against them).
    overrides = _explicit(ctx, config_names)
    budget = Budget(steps, epochs, minutes)
    # Nonsense options fail here, in one line, before any text is read or kernel compiled.
    _check_options(overrides, budget, threads, sample_every)
    if text_file is not None and not text_file.exists():
        raise InputError(
            f"{text_file}: no such file; `charrnn download NAME` fetches a text (`charrnn corpora` lists them)"
        )
    if text_file is not None and text_file.is_dir():
        raise InputError(f"{text_file} is a folder; give the text file to train on")
    if out_dir is None:
        out_dir = Path("models") / text_file.stem
    if resume and not (out_dir / checkpoint.STATE_FILE).exists():
        raise InputError(
            f"{out_dir}: nothing to resume (no {checkpoint.STATE_FILE}); start a run "
            f"with: charrnn train TEXT_FILE --out {out_dir}"
        )
    from charrnn.training.loop import train  # here: `charrnn --help` need not load the kernels

    display = _Display(sys.stdout, sys.stdout.isatty())
    try:
        result = train(
            text_file,
            out_dir,
            overrides=overrides,
            budget=budget,
            resume=resume,
            force=force,
            encoding=encoding,
            threads=threads,
            sample_every=sample_every,
            on_event=display,
            init_from=init_from,
        )
    finally:
        display.close()
    if result.interrupted:
        click.echo(
            f"Interrupted at step {result.step:,}; the checkpoint is saved. "
            f"Resume with: charrnn train --out {out_dir} --resume",
            err=True,
        )
        sys.exit(130)
    share = result.val_seconds / result.elapsed if result.elapsed > 0 else 0.0
    click.echo(f"Done: {result.step:,} steps, best validation {result.best_val_bpc:.4f} bpc; model in {out_dir}")
    click.echo(
        f"Validation took {result.val_seconds:.1f} s of the {result.elapsed:.0f} s of training "
        f"({share:.1%}), and {result.final_val_seconds:.1f} s for the exact score at the end"
    )


def _check_options(overrides: dict, budget: Budget, threads: int | None, sample_every: int) -> None:
    """InputError (one line) for values no run could use."""
    TrainConfig.for_cell(**overrides).check()
    budget.check()
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be 1 or more, got {threads} (leave it out to use every core)")
    if sample_every < 0:
        raise InputError(f"--sample-every must be 0 (no samples) or more, got {sample_every}")


COMMANDS = [train_command]
