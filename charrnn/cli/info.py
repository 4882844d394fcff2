"""`charrnn info`: what a model directory holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from charrnn import checkpoint
from charrnn.errors import InputError


@click.command("info")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print meta.json as it is (JSON) instead of the summary.  [default: off]")
def info_command(model_dir, as_json):
    """Describe the model in MODEL_DIR: sizes, vocabulary, steps, validation bpc, corpus.

    \b
        charrnn info models/tiny-shakespeare
    """
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: no such model directory; `charrnn train TEXT_FILE` writes "
                         "one (in models/, unless --out names another)")
    if not (model_dir / checkpoint.META_FILE).exists():
        raise InputError(f"{model_dir}: not a model directory (no {checkpoint.META_FILE}); give "
                         "the directory `charrnn train` wrote (its --out)")
    model = checkpoint.load_model(model_dir)
    meta = model.meta
    if as_json:
        click.echo(json.dumps(meta, indent=1, ensure_ascii=False))
        return
    h, v = model.params.hidden, len(model.vocab)
    n_params = model.params.flat.size
    config = meta.get("config", {})
    corpus = meta.get("corpus", {})
    shown_vocab = "".join(model.vocab.chars[:80]).replace("\n", "\\n").replace("\t", "\\t")
    lines = [
        f"model       {model_dir}",
        f"network     vanilla RNN, {h} hidden units, {n_params:,} parameters "
        f"(U {v}x{h}, W {h}x{h}, V {h}x{v})",
        f"vocabulary  {v} characters: {shown_vocab}{' ...' if v > 80 else ''}",
        f"trained     {meta.get('step', 0):,} steps (best model), "
        f"batch {config.get('batch_size', '?')} x {config.get('seq_length', '?')}, "
        f"{config.get('optimizer', '?')} lr {config.get('lr', '?')}",
        f"validation  {meta['best_val_bpc']:.4f} bits per character" if meta.get("best_val_bpc") else
        "validation  none recorded",
        f"corpus      {corpus.get('name', '?')} ({corpus.get('bytes', 0):,} bytes, "
        f"sha256 {corpus.get('sha256', '?')[:16]}...)",
    ]
    click.echo("\n".join(lines))


COMMANDS = [info_command]
