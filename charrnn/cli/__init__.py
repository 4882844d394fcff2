"""The `charrnn` command line: library errors become one-line messages, never tracebacks."""

from __future__ import annotations

import click

from charrnn import __version__
from charrnn.errors import CharRNNError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CharRNNError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def main():
    """charrnn: train a character-level RNN on any text file and sample from it."""


def _register():
    # Each command lives in a module of its own; importing them here keeps `charrnn --help` whole.
    import importlib

    for module in ("train", "info", "sample", "download", "plot"):
        try:
            mod = importlib.import_module(f"charrnn.cli.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"charrnn.cli.{module}":
                raise
            continue
        for command in mod.COMMANDS:
            main.add_command(command)


_register()
