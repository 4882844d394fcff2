"""`charrnn eval`: a model's bits per character on any text."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("text_file", type=click.Path(path_type=Path))
@click.option(
    "--encoding", default="utf-8", show_default=True, help="Encoding of TEXT_FILE, e.g. utf-8, latin-1, cp1252."
)
@click.option(
    "--unknown",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="Characters the model does not know: stop with an error naming them, or leave them out of the text.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.  [default: off]")
def eval_command(model, text_file, encoding, unknown, as_json):
    """Score MODEL (a model directory or a bundled model's name) on TEXT_FILE: bits per
    character, the state carried through the whole text (as training's validation does).

    \b
        charrnn eval models/tiny-shakespeare corpora/tiny-shakespeare.txt
        charrnn eval shakespeare-lstm mytext.txt --unknown skip
    """
    import json

    from charrnn.errors import InputError
    from charrnn.sampling import load
    from charrnn.training.evaluate import evaluate_file

    if not text_file.exists():
        raise InputError(f"{text_file}: no such file")
    loaded = load(model)
    result = evaluate_file(loaded, text_file, encoding, unknown)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model": str(model),
                    "text": str(text_file),
                    "bpc": result.bpc,
                    "chars": result.chars,
                    "skipped": result.skipped,
                },
                ensure_ascii=False,
            )
        )
        return
    if result.skipped:
        shown = " ".join(repr(c) for c in list(result.skipped)[:10])
        click.echo(
            f"skipped {sum(result.skipped.values()):,} characters not in the model's vocabulary: {shown}", err=True
        )
    click.echo(f"{result.bpc:.4f} bits per character over {result.chars:,} characters")


COMMANDS = [eval_command]
