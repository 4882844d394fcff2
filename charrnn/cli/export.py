"""`charrnn export`: a model for other tools (ONNX, safetensors for PyTorch, a web page)."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.errors import InputError
from charrnn.export import FORMATS

SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "html": ".html"}


@click.command("export")
@click.argument("model")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="onnx: a one-step model on ONNX's RNN/GRU/LSTM operators; safetensors: the "
    "weights under PyTorch's names; html: a self-contained page that writes text "
    "in the browser.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write.  [default: MODEL's name with the format's suffix, in the current directory]",
)
@click.option("--force", is_flag=True, help="Replace an existing file.  [default: off]")
def export_command(model, fmt, out, force):
    """Write MODEL (a model directory or a bundled model's name) for use outside charrnn.

    onnx and safetensors need the export extra: pip install "charrnn[export]".

    \b
        charrnn export shakespeare-lstm --format html --out shakespeare.html
        charrnn export models/tiny-shakespeare --format onnx --out tiny.onnx
        charrnn export shakespeare-lstm --format safetensors --out lstm.safetensors
    """
    from charrnn import export
    from charrnn.sampling import load, resolve_model_dir

    export.require(fmt)  # before the model is read: say what to install
    directory = resolve_model_dir(model)
    name = directory.resolve().name
    if out is None:
        out = Path(name + SUFFIXES[fmt])
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to replace it")
    if out.parent != Path("") and not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such directory")
    loaded = load(directory)
    if fmt == "html":
        from charrnn.export.html_format import write

        write(loaded, out, name)
    else:
        export.export(loaded, fmt, out)
    click.echo(f"{out} ({out.stat().st_size:,} bytes): {loaded.spec.describe()} as {fmt}")


COMMANDS = [export_command]
