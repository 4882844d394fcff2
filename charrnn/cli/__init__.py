"""The `charrnn` command line: library errors become one-line messages, never tracebacks."""

from __future__ import annotations

import click

from charrnn import __version__
from charrnn.errors import CharRNNError


PROG_NAME = "charrnn"
COMPLETE_VAR = "_CHARRNN_COMPLETE"  # click's shell completion: _CHARRNN_COMPLETE=bash_source charrnn


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, **kwargs):
        # `python -m charrnn` is the same program as `charrnn`: same usage lines, same completion.
        return super().main(args, prog_name or PROG_NAME, complete_var or COMPLETE_VAR, **kwargs)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CharRNNError as error:
            raise click.ClickException(str(error)) from None


@click.group(PROG_NAME, cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG_NAME)
def main():
    """charrnn: train a character-level RNN on any text file and sample from it.

    Every command has -h.  Shell completion: add the line for your shell to its startup file
    (~/.bashrc, ~/.zshrc, ~/.config/fish/config.fish).

    \b
      bash:  eval "$(_CHARRNN_COMPLETE=bash_source charrnn)"
      zsh:   eval "$(_CHARRNN_COMPLETE=zsh_source charrnn)"
      fish:  _CHARRNN_COMPLETE=fish_source charrnn | source
    """


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
