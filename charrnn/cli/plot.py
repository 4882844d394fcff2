"""`charrnn plot`: training and validation curves as a picture or a chart in the terminal."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.plot import X_AXES, load_curves, render_ascii, write_image

DEFAULT_IMAGE = "curves.png"


@click.command("plot")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Picture to write; .png, .svg or .pdf by its suffix. [default: MODEL_DIR/{DEFAULT_IMAGE}]",
)
@click.option(
    "--x",
    "x_axis",
    type=click.Choice([*X_AXES, "both"]),
    default=None,
    help="Horizontal axis: training steps, training time (seconds, minutes or hours, "
    "whichever reads best) or both (side by side in the picture, one chart after "
    "the other with --ascii). [default: both for the picture, steps for --ascii]",
)
@click.option(
    "--ascii",
    "as_text",
    is_flag=True,
    help="Print a text chart to the terminal instead of drawing a picture (needs no matplotlib). [default: off]",
)
@click.option(
    "--width",
    type=click.IntRange(min=30),
    default=79,
    show_default=True,
    help="Width of the --ascii chart, in characters.",
)
@click.option(
    "--height",
    type=click.IntRange(min=10),
    default=22,
    show_default=True,
    help="Height of the --ascii chart, in lines.",
)
def plot_command(model_dir, out, x_axis, as_text, width, height):
    """Draw the training and validation curves of MODEL_DIR in bits per character.

    Writes a PNG (needs matplotlib: pip install "charrnn[plot]") and prints its path,
    or with --ascii prints a chart in the terminal.
    """
    if as_text and out is not None:
        raise click.UsageError(
            "--out is for the picture; --ascii prints to the terminal (redirect it with > to keep it in a file)"
        )
    curves = load_curves(model_dir)
    if as_text:
        axes = X_AXES if x_axis == "both" else (x_axis or "steps",)
        click.echo("\n\n".join(render_ascii(curves, width, height, axis) for axis in axes))
        return
    axes = X_AXES if x_axis in (None, "both") else (x_axis,)
    written = write_image(curves, out if out is not None else model_dir / DEFAULT_IMAGE, axes)
    click.echo(str(written))


COMMANDS = [plot_command]
