"""The `charrnn` command line: library errors become one-line messages, never tracebacks.

So do filesystem errors (a full disk, a read-only folder, a file where a folder should be) that
reach the command line as OSError: the message names the path and says what to do, and for
`charrnn train` how to carry on from what was saved.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import weakref
from pathlib import Path

import click

from charrnn import __version__
from charrnn.errors import CharRNNError, describe_os_error

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
        return _guarded(next(command for command in commands if command.name == name))

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
        except BrokenPipeError:
            raise  # the reader went away (charrnn sample | head): not a fault to report
        except OSError as error:  # one that escaped a command's own handling
            raise click.ClickException(describe_os_error(error, then="try again")) from None


_GUARDED: weakref.WeakSet[click.Command] = weakref.WeakSet()  # the copies _guarded made


def _guarded(command: click.Command) -> click.Command:
    """A copy of `command` whose OSErrors become one-line messages worded with its options
    (so `charrnn train` can say how to resume from what it saved)."""
    if command in _GUARDED or command.callback is None:
        return command
    callback = command.callback

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except BrokenPipeError:
            raise
        except OSError as error:
            ctx = click.get_current_context()
            raise click.ClickException(_os_error_message(error, ctx.info_name, ctx.params)) from None

    guarded = copy.copy(command)
    guarded.callback = run
    _GUARDED.add(guarded)
    return guarded


def _os_error_message(error: OSError, command: str, params: dict) -> str:
    """The one line for an OSError in `command`: the path, the reason, what to do, how to go on."""
    if command == "train":
        return describe_os_error(error, then=_train_then(error, params))
    if command == "download":
        return describe_os_error(error, then="run the download again")
    return describe_os_error(error, then=f"run charrnn {command} again")


def _train_then(error: OSError, params: dict) -> str:
    """How to carry on after a failed save: resume from the last training state if there is one."""
    from charrnn.model.checkpoint import META_FILE, STATE_FILE  # only on this error path

    out_dir = params.get("out_dir")
    if out_dir is None and params.get("text_file") is not None:
        out_dir = Path("models") / Path(params["text_file"]).stem
    if out_dir is None and error.filename is not None:
        out_dir = Path(error.filename).parent
    if out_dir is not None and (Path(out_dir) / STATE_FILE).is_file():
        return f"resume with: charrnn train --out {out_dir} --resume"
    if out_dir is not None and (Path(out_dir) / META_FILE).is_file():
        return "run the same command again with --force"
    return "run the same command again"


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


_COMMAND_MODULES = {
    "train": "train",
    "info": "info",
    "sample": "sample",
    "download": "download",
    "corpora": "download",
    "plot": "plot",
    "eval": "eval",
    "serve": "serve",
    "sweep": "sweep",
    "score": "score",
    "export": "export",
}
