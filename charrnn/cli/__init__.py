"""The `charrnn` command line: library errors become one-line messages, never tracebacks."""

from __future__ import annotations

import difflib
import importlib

import click

from charrnn import __version__
from charrnn.errors import CharRNNError


PROG_NAME = "charrnn"
COMPLETE_VAR = "_CHARRNN_COMPLETE"  # click's shell completion: _CHARRNN_COMPLETE=bash_source charrnn


class _Group(click.Group):
    """Commands are imported when used, so `charrnn sample` does not pay for the downloader's or
    the trainer's imports (a warm start to the first character is mostly imports)."""

    def list_commands(self, ctx):
        return sorted(_COMMAND_MODULES)

    def get_command(self, ctx, name):
        module = _COMMAND_MODULES.get(name)
        if module is None:
            return None
        commands = importlib.import_module(f"charrnn.cli.{module}").COMMANDS
        return next(command for command in commands if command.name == name)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not ctx.resilient_parsing and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            ctx.fail(f"No such command {name!r}." + (f" Did you mean {close[0]!r}?" if close else ""))
        return super().resolve_command(ctx, args)

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


_COMMAND_MODULES = {"train": "train", "info": "info", "sample": "sample", "download": "download",
                    "corpora": "download", "plot": "plot", "serve": "serve", "sweep": "sweep"}
