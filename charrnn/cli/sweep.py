"""`charrnn sweep`: hyperparameter sweeps on Ray Tune, on this machine or a running Ray cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from charrnn.errors import InputError
from charrnn.sweep.layout import FAILED, FINISHED, STOPPED
from charrnn.sweep.ray_setup import INSTALL_HINT, RayMissing, ray_installed
from charrnn.sweep.run import run_sweep
from charrnn.sweep.settings import DEFAULT_EVAL_EVERY, DEFAULT_TRIAL_MINUTES, DEFAULT_TRIALS, SweepEvent, SweepSettings
from charrnn.sweep.space import SWEEPABLE, option_name

SPACE_HELP = {
    "cell": "Cells to try, a comma list of rnn, lstm, gru.",
    "hidden": "Hidden units: a comma list (256,512) or a range low:high.",
    "layers": "Stacked layers: a comma list or a range.",
    "dropout": "Dropout between layers: a comma list or a range (0:0.5).",
    "lr": "Peak learning rate: a comma list or a range, drawn log-uniformly (1e-3:5e-3).",
    "seq-length": "Characters per stream per step: a comma list or a range.",
    "batch-size": "Streams per step: a comma list or a range.",
}
_SETTINGS_OPTIONS = (
    "trials",
    "trial_minutes",
    "trial_steps",
    "concurrent",
    "threads",
    "eval_every",
    "val_frac",
    "seed",
    "encoding",
    "early_stop",
    *SWEEPABLE,
)


def _fmt(name: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if name == "lr" else f"{value:.2f}"
    return str(value)


def _settings_text(settings: dict, names=None) -> str:
    names = names if names is not None else list(settings)
    return ", ".join(f"{n.replace('_', '-')} {_fmt(n, settings[n])}" for n in names if n in settings)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class _Display:
    """Lines for the sweep and each trial's end; on a terminal, also an updating status line."""

    def __init__(self, stream, interactive: bool):
        self.stream, self.interactive = stream, interactive
        self.open_line = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def line(self, text: str) -> None:
        self._write(("\r\x1b[K" if self.open_line else "") + text + "\n")
        self.open_line = False

    def status(self, progress) -> str:
        best = f" | best {progress.best.best_val_bpc:.4f} bpc ({progress.best.trial})" if progress.best else ""
        return (
            f"trials {progress.done}/{progress.total} done ({progress.stopped} stopped early, "
            f"{progress.failed} failed), {progress.running} running{best} | "
            f"{_duration(progress.elapsed)}"
        )

    def close(self) -> None:
        if self.open_line:
            self._write("\n")
            self.open_line = False

    def __call__(self, event: SweepEvent) -> None:
        record = event.record
        if event.kind in ("start", "ray", "note"):
            self.line(event.text)
        elif event.kind == "trial_start" and record is not None:
            self.line(f"{record.trial} started: {_settings_text(record.settings)}")
        elif event.kind == "trial_end" and record is not None:
            if record.status == FAILED:
                self.line(f"{record.trial} failed: {record.error}")
            else:
                how = "stopped early" if record.status == STOPPED else "finished"
                bpc = "no bpc" if record.best_val_bpc is None else f"{record.best_val_bpc:.4f} bpc"
                self.line(
                    f"{record.trial} {how}: {bpc} at step {record.steps:,}, {_duration(record.seconds)} of training"
                )
            if not self.interactive:
                self.line(self.status(event.progress))
        if self.interactive and event.kind in ("trial_start", "trial_end", "progress"):
            self._write("\r\x1b[K" + self.status(event.progress))
            self.open_line = True


def _table(result) -> str:
    varied = list(result.varied)
    header = ["rank", "trial", "best bpc", "steps", "time", "status", *[n.replace("_", "-") for n in varied]]
    rows = []
    for rank, record in enumerate(result.records, 1):
        bpc = f"{record.best_val_bpc:.4f}" if record.best_val_bpc is not None else "-"
        rows.append(
            [
                str(rank),
                record.trial,
                bpc,
                f"{record.steps:,}",
                _duration(record.seconds),
                record.status,
                *[_fmt(n, record.settings[n]) if n in record.settings else "-" for n in varied],
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )


def _space_option(name: str):
    return click.option(option_name(name), name, metavar="SPACE", help=SPACE_HELP[name.replace("_", "-")])


def _space_options(function):
    for name in reversed(list(SWEEPABLE)):
        function = _space_option(name)(function)
    return function


@click.command("sweep")
@click.argument("text_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Sweep directory (created if missing).  [default: sweeps/<TEXT_FILE's name without its suffix>]",
)
@click.option(
    "--trials",
    type=int,
    default=DEFAULT_TRIALS,
    show_default=True,
    help="Trials to run: settings drawn at random from the space.",
)
@click.option(
    "--trial-minutes",
    type=float,
    help=f"Budget of each trial in minutes of training.  [default: {DEFAULT_TRIAL_MINUTES:g} if no budget is given]",
)
@click.option(
    "--trial-steps",
    type=int,
    help="Budget of each trial in steps (the first limit reached stops it).  [default: no step limit]",
)
@_space_options
@click.option(
    "--eval-every",
    type=int,
    default=DEFAULT_EVAL_EVERY,
    show_default=True,
    help="Steps between validations; each one is reported to the scheduler, and copies the trial's directory into DIR.",
)
@click.option(
    "--val-frac",
    type=float,
    default=0.05,
    show_default=True,
    help="Fraction of the text, from its end, held out for validation.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of every trial's training and of the random search."
)
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of TEXT_FILE.")
@click.option("--concurrent", type=int, help="Trials at once.  [default: as many as the CPUs fit, --threads each]")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Threads (and Ray CPUs) of each trial.  [default: 1; with --concurrent on a "
    "local Ray, the cores shared among the trials]",
)
@click.option(
    "--early-stop/--no-early-stop",
    default=True,
    show_default=True,
    help="ASHA early stopping: at a ninth and a third of the budget, trials worse than the best third so far stop.",
)
@click.option(
    "--address",
    help="A running Ray cluster, HOST:PORT of its head or auto.  [default: $RAY_ADDRESS, "
    "else a local Ray started for the run]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the sweep in --out: finished trials are kept, unfinished ones resume "
    "from their checkpoints.  [default: off]",
)
@click.option("--force", is_flag=True, help="Replace a sweep already in --out.  [default: off]")
@click.pass_context
def sweep_command(ctx, text_file, out_dir, address, resume, force, **options):
    """Sweep hyperparameters on TEXT_FILE with Ray Tune: --trials trainings with settings drawn
    at random from the space, worse ones stopped early (ASHA), each an ordinary model directory in
    DIR/trials/.  DIR/best links to the best one, DIR/results.jsonl has a line per trial, and the
    end prints them ranked.

    A space option is a comma list (a choice), low:high (a range) or one value (fixed).  With none
    given, the space is --cell rnn,lstm,gru --hidden 256,512,1024 --layers 1,2 --dropout 0:0.3
    --lr 1e-3:5e-3 (less any setting this charrnn's trainer does not have).

    \b
        charrnn sweep corpora/tiny-shakespeare.txt --trials 16 --trial-minutes 5 \\
            --hidden 256,512 --lr 1e-3:5e-3 --concurrent 2
        charrnn sweep --out sweeps/tiny-shakespeare --resume
        charrnn sweep corpora/tiny-shakespeare.txt --address auto    # on a Ray cluster
    """
    if not ray_installed():  # without Ray, say what to install before anything else
        raise RayMissing(INSTALL_HINT)
    if resume and force:
        raise click.UsageError("--resume continues the sweep in --out and --force replaces it: give one of them")
    if resume:
        if out_dir is None:
            raise click.UsageError("--resume needs --out DIR, the sweep to continue")
        _refuse_settings_on_resume(ctx)
        settings = None
    else:
        if text_file is None:
            raise click.UsageError("give a TEXT_FILE to sweep on (or --out DIR --resume to continue a sweep)")
        settings = _new_settings(address, options)
        if not text_file.exists():
            raise InputError(
                f"{text_file}: no such file; `charrnn download NAME` fetches a text (`charrnn corpora` lists them)"
            )
        if out_dir is None:
            out_dir = Path("sweeps") / text_file.stem
    display = _Display(sys.stdout, sys.stdout.isatty())
    try:
        result = run_sweep(text_file, out_dir, settings, resume=resume, force=force, address=address, on_event=display)
    finally:
        display.close()
    _report(result, out_dir, settings)


def _refuse_settings_on_resume(ctx) -> None:
    """InputError naming the settings given on the command line: a resumed sweep keeps its own."""
    source = click.core.ParameterSource
    given = [n for n in _SETTINGS_OPTIONS if ctx.get_parameter_source(n) not in (source.DEFAULT, source.DEFAULT_MAP)]
    if given:
        raise InputError("a resumed sweep keeps its settings; drop " + ", ".join(option_name(n) for n in given))


def _new_settings(address, options: dict) -> SweepSettings:
    """A new sweep's settings from the options, checked (nonsense fails here, in one line, before
    the text is read)."""
    space = {n: options[n] for n in SWEEPABLE if options[n] is not None}
    threads = options["threads"]
    if threads is None:
        threads = 1
        if options["concurrent"] and not (address or _env_address()):
            from charrnn.kernels.threads import usable_cores

            threads = max(1, usable_cores() // options["concurrent"])
    settings = SweepSettings(
        space=space,
        trials=options["trials"],
        trial_minutes=options["trial_minutes"],
        trial_steps=options["trial_steps"],
        concurrent=options["concurrent"],
        threads=threads,
        eval_every=options["eval_every"],
        val_frac=options["val_frac"],
        seed=options["seed"],
        encoding=options["encoding"],
        early_stop=options["early_stop"],
    )
    settings.check()
    return settings


def _report(result, out_dir: Path, settings: SweepSettings | None) -> None:
    """The ranked table, the best trial, and for an interrupted sweep how to continue it (exit
    130); ClickException if every trial failed."""
    if result.records:
        click.echo(_table(result))
    if result.best is not None:
        click.echo(
            f"Best: {result.best.best_val_bpc:.4f} bpc, {out_dir / 'best'} -> "
            f"trials/{result.best.trial}; results in {out_dir / 'results.jsonl'}"
        )
    if result.interrupted:
        complete = sum(1 for r in result.records if r.status in (FINISHED, STOPPED, FAILED))
        total = settings.trials if settings else None
        click.echo(
            f"Interrupted with {complete} trial{'s' if complete != 1 else ''} complete"
            + (f" of {total}" if total else "")
            + "; continue with: charrnn sweep --out "
            f"{out_dir} --resume",
            err=True,
        )
        sys.exit(130)
    if not any(r.status in (FINISHED, STOPPED) for r in result.records):
        raise click.ClickException("every trial failed (see above)")


def _env_address():
    import os

    return os.environ.get("RAY_ADDRESS")


COMMANDS = [sweep_command]
