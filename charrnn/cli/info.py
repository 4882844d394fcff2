"""`charrnn info`: what a model directory holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from charrnn.errors import InputError
from charrnn.model import checkpoint


@click.command("info")
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option(
    "--json", "as_json", is_flag=True, help="Print meta.json as it is (JSON) instead of the summary.  [default: off]"
)
@click.option(
    "--system",
    is_flag=True,
    help="Describe this machine instead: CPU and vector features, the kernel path "
    "of each cell, BLAS, versions (paste it when reporting a slow run).  "
    "[default: off]",
)
def info_command(model, as_json, system):
    """Describe MODEL (a model directory, or a bundled model's name): its cell, layers and
    sizes, vocabulary, training, validation bpc and corpus. With --system, describe what runs
    on this machine and why.

    \b
        charrnn info models/tiny-shakespeare
        charrnn info shakespeare-lstm
        charrnn info --system
    """
    from charrnn.sampling import resolve_model_dir

    if system:
        if model is not None:
            raise InputError("give either MODEL or --system, not both")
        from charrnn.system import describe_system, format_system

        report = describe_system()
        click.echo(json.dumps(report, indent=1) if as_json else "\n".join(format_system(report)))
        return
    if model is None:
        raise InputError(
            "missing MODEL: give a model directory or a bundled model's name (or --system to describe this machine)"
        )

    model_dir = resolve_model_dir(model)
    if not model_dir.is_dir():
        raise InputError(
            f"{model_dir}: no such model directory; `charrnn train TEXT_FILE` writes "
            "one (in models/, unless --out names another)"
        )
    if not (model_dir / checkpoint.META_FILE).exists():
        raise InputError(
            f"{model_dir}: not a model directory (no {checkpoint.META_FILE}); give "
            "the directory `charrnn train` wrote (its --out)"
        )
    loaded = checkpoint.load_model(model_dir)
    if as_json:
        click.echo(json.dumps(loaded.meta, indent=1, ensure_ascii=False))
        return
    click.echo("\n".join(_summary(model, loaded)))


def _summary(name, model) -> list[str]:
    meta, spec = model.meta, model.spec
    h, v, g = spec.hidden, spec.vocab_size, spec.gates * spec.hidden
    config = meta.get("config", {})
    corpus = meta.get("corpus", {})
    shown_vocab = "".join(model.vocab.chars[:80]).replace("\n", "\\n").replace("\t", "\\t")
    shapes = f"U.0 {v}x{g}, W {h}x{g}" + (f", U.1.. {h}x{g}" if spec.layers > 1 else "") + f", V {h}x{v}"
    dropout = config.get("dropout", 0.0)
    choice = meta.get("auto_choice")
    method = meta.get("val_bpc_method")
    validation = (
        f"validation  {meta['best_val_bpc']:.4f} bits per character"
        f"{' (estimate; the run ended early)' if method == 'estimate' else ''}"
        if meta.get("best_val_bpc")
        else "validation  none recorded"
    )
    return [
        f"model       {name}",
        f"network     {spec.describe()}, {spec.n_params:,} parameters ({shapes})",
        f"vocabulary  {v} characters: {shown_vocab}{' ...' if v > 80 else ''}",
        f"trained     {meta.get('step', 0):,} steps (best model), "
        f"batch {config.get('batch_size', '?')} x {config.get('seq_length', '?')}, "
        f"{config.get('optimizer', '?')} lr {config.get('lr', '?')}, "
        f"dropout {dropout:g}",
        *([f"chosen      {choice.get('reason', '?')}"] if isinstance(choice, dict) else []),
        validation,
        f"corpus      {corpus.get('name', '?')} ({corpus.get('bytes', 0):,} bytes, "
        f"sha256 {corpus.get('sha256', '?')[:16]}...)",
        f"format      {meta.get('format_version')} (charrnn {meta.get('charrnn_version', '?')})",
    ] + ([f"tuned from  {_parent(meta['parent'])}"] if isinstance(meta.get("parent"), dict) else [])


def _parent(record: dict) -> str:
    from charrnn.training.finetune import describe

    return describe(record)


COMMANDS = [info_command]
