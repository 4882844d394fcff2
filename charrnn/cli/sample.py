"""`charrnn sample`: text from a trained model, written to stdout as it is generated."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from charrnn.errors import InputError
from charrnn.sampling.options import DEFAULT_LENGTH, DEFAULT_TEMPERATURE, SampleOptions, check_count, option_name


def _check_options(length, temperature, top_k, top_p, seed, num) -> None:
    """The CLI's own one-line messages, naming its options, before any model is read."""
    SampleOptions(length, temperature, top_k, top_p, seed=seed).check(option_name)
    check_count(num, "--num")


def _prepare_prime(vocab, prime: str, unknown: str, where: str) -> str:
    """The prime to use: InputError on unknown characters, or those dropped with a warning."""
    from charrnn.sampling.options import drop_unknown, unknown_prime_message

    problem = unknown_prime_message(vocab, prime)
    if problem is None:
        return prime
    if unknown == "error":
        raise InputError(f"{problem}; remove them from {where}, or pass --unknown skip to drop them")
    kept, dropped = drop_unknown(vocab, prime)
    shown = " ".join(repr(c) for c in dropped)
    click.echo(f"warning: dropped characters not in the model's vocabulary: {shown}", err=True)
    return kept


def _write_samples(model, prime, echo_prime, num, options, rng) -> None:
    """`num` samples generated together as one batch; the first is shown as it is made, the
    others (kept meanwhile) after it, each after a blank line."""
    from charrnn.sampling import iter_samples

    later: list[list[str]] = [[] for _ in range(num - 1)]
    if echo_prime:
        click.echo(prime, nl=False)
    for pieces in iter_samples(model.params, model.vocab, num=num, prime=prime, rng=rng, **options):
        click.echo(pieces[0], nl=False)  # click.echo flushes: the reader sees text as it comes
        for kept, piece in zip(later, pieces[1:], strict=True):
            kept.append(piece)
    click.echo("")
    for kept in later:
        click.echo("")  # a blank line between samples
        click.echo((prime if echo_prime else "") + "".join(kept))


def _interactive(model, echo_prime, num, unknown, options, rng) -> None:
    click.echo("Type a prime and press Enter; an empty line or Ctrl-D quits.", err=True)
    while True:
        try:
            line = click.prompt("prime", default="", show_default=False, prompt_suffix="> ", err=True)
        except click.Abort:  # Ctrl-D (or Ctrl-C) at the prompt
            click.echo("", err=True)
            return
        if not line:
            return
        try:
            prime = _prepare_prime(model.vocab, line, unknown, "the prime")
        except InputError as error:  # a bad prime should not end the session
            click.echo(f"Error: {error}", err=True)
            continue
        try:
            _write_samples(model, prime, echo_prime, num, options, rng)
        except KeyboardInterrupt:  # Ctrl-C stops this continuation, not the session
            click.echo("")


@click.command("sample")
@click.argument("model_dir", metavar="[MODEL]", required=False, type=click.Path(path_type=Path))
@click.option(
    "--prime",
    default="",
    metavar="TEXT",
    help="Text the network reads first; printed as the start of the output.  "
    "[default: none: start from the zero state]",
)
@click.option("--no-prime-echo", is_flag=True, help="Print only what is generated, not the prime.  [default: off]")
@click.option(
    "--length", "-n", default=DEFAULT_LENGTH, show_default=True, help="Characters to generate for each sample."
)
@click.option(
    "--temperature",
    "-t",
    default=DEFAULT_TEMPERATURE,
    show_default=True,
    help="Above 0: lower is safer and more repetitive, higher is wilder.",
)
@click.option("--top-k", default=0, show_default=True, help="Draw only from this many most likely characters (0: off).")
@click.option(
    "--top-p",
    default=1.0,
    show_default=True,
    help="Draw only from the most likely characters that make up this fraction of the probability, in (0, 1] (1: off).",
)
@click.option("--greedy", is_flag=True, help="Always take the most likely character (no randomness).  [default: off]")
@click.option(
    "--seed", type=int, default=None, help="Random seed: the same seed gives the same text.  [default: a fresh one]"
)
@click.option(
    "--num",
    default=1,
    show_default=True,
    help="Independent samples, generated together as one batch and printed one after "
    "another, separated by a blank line.",
)
@click.option(
    "--unknown",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="Prime characters the model does not know: stop with an error, or drop them with a warning.",
)
@click.option(
    "--interactive",
    "-i",
    is_flag=True,
    help="Ask for a prime, print a continuation, repeat; an empty line or Ctrl-D quits.  [default: off]",
)
def sample(model_dir, prime, no_prime_echo, length, temperature, top_k, top_p, greedy, seed, num, unknown, interactive):
    """Generate text from MODEL: a model directory, or a bundled model's name (shakespeare-lstm,
    the default, or shakespeare, a vanilla RNN).

    \b
    Examples:
      charrnn sample --prime "ROMEO:"
      charrnn sample shakespeare --prime "JULIET:"
      charrnn sample runs/mymodel --length 2000 --temperature 0.6 --seed 1
      charrnn sample --interactive
    """
    # Imported here so that `charrnn --help` and other commands need not load the kernels.
    import numpy as np

    from charrnn.sampling import load

    _check_options(length, temperature, top_k, top_p, seed, num)
    if interactive and prime:
        raise InputError("--prime does not go with --interactive: type each prime at the prompt")
    model = load(model_dir)
    rng = np.random.default_rng(seed)
    options = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    try:
        if interactive:
            _interactive(model, not no_prime_echo, num, unknown, options, rng)
        else:
            prime = _prepare_prime(model.vocab, prime, unknown, "--prime")
            _write_samples(model, prime, not no_prime_echo, num, options, rng)
    except BrokenPipeError:
        # The reader went away (e.g. `charrnn sample | head`): stop quietly. Point stdout at
        # /dev/null so that Python's flush at exit does not fail a second time.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass


COMMANDS = [sample]
