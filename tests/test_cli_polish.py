"""The command line as a new user meets it: help, version, defaults in help, errors that say what
to do, options refused before any work, shell completion, the kernels line on a first run."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import charrnn
import charrnn.cli.train as cli_train
import charrnn.training.loop as library_train
import charrnn.training.run as training_run
from charrnn.cli import main
from charrnn.kernels.threads import usable_cores
from charrnn.training.config import TrainEvent

TINY = ["--hidden", "16", "--seq-length", "16", "--batch-size", "4", "--threads", "1"]
PACKAGE_PARENT = Path(charrnn.__file__).resolve().parent.parent
COMMANDS_WITH_DEFAULTS_IN_HELP = ["train", "info", "download", "corpora", "plot", "sample"]


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and result.stdout == ""  # a handled error, not a crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# --version, -h, defaults and units in every option's help


def test_version_and_short_help():
    version = run("--version")
    assert version.exit_code == 0 and version.output == f"charrnn, version {charrnn.__version__}\n"
    for args in (["-h"], ["--help"]):
        result = run(*args)
        assert result.exit_code == 0 and result.output.startswith("Usage: charrnn [OPTIONS] COMMAND")
        assert "_CHARRNN_COMPLETE=bash_source charrnn" in result.output


@pytest.mark.parametrize("command", main.list_commands(None))
def test_every_command_has_short_help(command):
    result = run(command, "-h")
    assert result.exit_code == 0 and result.output.startswith(f"Usage: charrnn {command} ")
    assert result.output == run(command, "--help").output


def _help_texts(name):
    command = main.get_command(None, name)
    context = click.Context(command, info_name=name, **main.context_settings)
    return {
        max(option.opts, key=len): option.get_help_record(context)[1]
        for option in command.params
        if isinstance(option, click.Option) and option.name != "help"
    }


@pytest.mark.parametrize("command", COMMANDS_WITH_DEFAULTS_IN_HELP)
def test_every_option_says_its_default(command):
    for option, text in _help_texts(command).items():
        assert "[default: " in text, f"charrnn {command} {option}: {text!r}"


@pytest.mark.parametrize(
    "option, unit",
    [
        ("--hidden", "units"),
        ("--seq-length", "characters"),
        ("--batch-size", "streams"),
        ("--steps", "steps"),
        ("--epochs", "passes"),
        ("--minutes", "minutes"),
        ("--eval-every", "steps"),
        ("--sample-every", "steps"),
        ("--val-frac", "fraction of the text"),
        ("--threads", "threads"),
        ("--clip", "norm"),
        ("--lr", "per step"),
    ],
)
def test_train_options_say_their_unit(option, unit):
    assert unit in _help_texts("train")[option].lower()


def test_threads_help_says_the_default_on_this_machine():
    assert f"here {usable_cores()}]" in _help_texts("train")["--threads"]


def test_python_dash_m_is_the_same_program_as_the_script():
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}
    result = subprocess.run([sys.executable, "-m", "charrnn", "trian"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: charrnn [OPTIONS]") and "Did you mean 'train'?" in result.stderr


# ---------------------------------------------------------------------------------------------
# Nonsense options: one line, before any text is read or kernel compiled


@pytest.fixture
def nothing_may_start(monkeypatch):
    """Fails the test if training, or reading the text, begins."""

    def refuse(*args, **kwargs):
        raise AssertionError("got as far as starting a run")

    monkeypatch.setattr(library_train, "train", refuse)
    monkeypatch.setattr(training_run, "load_corpus", refuse)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden", "0"], "--hidden must be a positive whole number, got 0"),
        (["--hidden", "-5"], "--hidden must be a positive whole number"),
        (["--seq-length", "0"], "--seq-length must be a positive whole number"),
        (["--batch-size", "-1"], "--batch-size must be a positive whole number"),
        (["--eval-every", "0"], "--eval-every must be a positive whole number"),
        (["--val-frac", "0"], "--val-frac must be in (0, 0.5], got 0.0"),
        (["--val-frac", "0.51"], "--val-frac must be in (0, 0.5]"),
        (["--val-frac", "-0.1"], "--val-frac must be in (0, 0.5]"),
        (["--steps", "0"], "--steps must be positive"),
        (["--epochs", "0"], "--epochs must be positive"),
        (["--minutes", "0"], "--minutes must be positive"),
        (["--minutes", "-1"], "--minutes must be positive"),
        (["--minutes", "nan"], "--minutes must be positive"),
        (["--sample-every", "-1"], "--sample-every must be 0 (no samples) or more, got -1"),
        (["--threads", "0"], "--threads must be 1 or more, got 0"),
        (["--lr", "0"], "--lr must be positive"),
        (["--lr", "inf"], "--lr must be positive"),
        (["--clip", "-1"], "--clip must be 0 (off) or positive"),
    ],
)
def test_nonsense_options_are_refused_up_front(text_file, tmp_path, nothing_may_start, args, message):
    assert_one_line_error(run("train", text_file, "--out", tmp_path / "m", *args), message)
    assert not (tmp_path / "m").exists()


def test_nonsense_options_on_resume_are_refused_before_the_saved_run_is_read(tmp_path, nothing_may_start):
    assert_one_line_error(
        run("train", "--out", tmp_path / "nothing", "--resume", "--steps", "0"), "--steps must be positive"
    )


def test_the_edges_of_the_ranges_are_fine(text_file, tmp_path):
    result = run(
        "train",
        text_file,
        "--out",
        tmp_path / "m",
        *TINY,
        "--val-frac",
        "0.5",
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--sample-every",
        "0",
        "--clip",
        "0",
    )
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------
# Errors say what to do next


def test_a_missing_text_file_points_at_charrnn_download(tmp_path, nothing_may_start):
    assert_one_line_error(
        run("train", tmp_path / "nope.txt"), "nope.txt: no such file", "charrnn download NAME", "charrnn corpora"
    )


def test_resuming_nothing_says_how_to_start(tmp_path, nothing_may_start):
    assert_one_line_error(
        run("train", "--out", tmp_path / "m", "--resume"),
        "nothing to resume",
        f"charrnn train TEXT_FILE --out {tmp_path / 'm'}",
    )


def test_missing_text_and_conflicting_flags_are_usage_errors(nothing_may_start):
    missing = run("train")
    assert missing.exit_code == 2
    assert "give a TEXT_FILE to train on (or --out MODEL_DIR --resume" in missing.stderr
    both = run("train", "--out", "m", "--resume", "--force")
    assert both.exit_code == 2 and "give one of them" in both.stderr


def test_an_existing_model_says_resume_or_force(text_file, tmp_path):
    out = tmp_path / "m"
    assert run("train", text_file, "--out", out, *TINY, "--steps", "2", "--eval-every", "2").exit_code == 0
    assert_one_line_error(run("train", text_file, "--out", out, *TINY, "--steps", "2"), "--resume", "--force")


def test_info_on_something_that_is_not_a_model_says_where_models_are(tmp_path):
    assert_one_line_error(run("info", tmp_path / "nothing"), "no such model directory", "charrnn train TEXT_FILE")
    assert_one_line_error(run("info", tmp_path), "not a model directory (no meta.json)", "charrnn train")


# ---------------------------------------------------------------------------------------------
# Shell completion, the click way


def complete(words: str, cword: int) -> list[str]:
    result = run(env={"_CHARRNN_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines()]


def test_completion_of_commands_options_and_choices():
    assert complete("charrnn tr", 1) == ["train"]
    assert "--hidden" in complete("charrnn train --hid", 2)
    assert complete("charrnn train --optimizer ", 3) == ["adam", "rmsprop", "adagrad"]
    assert complete("charrnn train ", 2) == [""]  # a file name: bash completes it (type "file")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(shell):
    result = run(env={"_CHARRNN_COMPLETE": f"{shell}_source"})
    assert result.exit_code == 0 and "_CHARRNN_COMPLETE" in result.output and "charrnn" in result.output


def test_the_readme_completion_line_makes_bash_complete_charrnn(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    lines = [
        line for line in readme.splitlines() if "_CHARRNN_COMPLETE=bash_source" in line and line.startswith("eval ")
    ]
    assert len(lines) == 1, "README.md should hold the bash completion line once, in a sh block"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "charrnn").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m charrnn "$@"\n')
    (bin_dir / "charrnn").chmod(0o755)
    script = (
        lines[0] + "\ncomplete -p charrnn\n"
        "COMPREPLY=(); COMP_WORDS=(charrnn tr); COMP_CWORD=1; _charrnn_completion charrnn\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(PACKAGE_PARENT)}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["complete -o nosort -F _charrnn_completion charrnn", "train"]


# ---------------------------------------------------------------------------------------------
# The first run says the kernels are compiling, then how long it took


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def step_event(step, **kwargs):
    return TrainEvent(
        "step",
        step=step,
        total_steps=30,
        epoch=step / 100,
        train_loss=3.0,
        chars_per_sec=1234.0,
        eta_seconds=42.0,
        **kwargs,
    )


def test_kernels_line_in_a_log_is_completed_with_its_time():
    out, clock = io.StringIO(), FakeClock()
    display = cli_train._Display(out, interactive=False, clock=clock)
    display(TrainEvent("start", text="1,000 training characters"))
    display(TrainEvent("compiling"))
    assert out.getvalue().endswith("Preparing the compiled kernels (the first run compiles them, once)... ")
    clock.now += 12.34
    display(TrainEvent("ready"))
    display(step_event(1))
    lines = out.getvalue().splitlines()
    assert lines[1] == "Preparing the compiled kernels (the first run compiles them, once)... done in 12.3 s"
    # The kernels are ready before the clock starts, so even the first step has a true speed.
    assert lines[2] == "step 1/30 | epoch 0.01 | loss 4.328 bpc | 1,234 chars/s | ETA 0:42"


def test_kernels_line_on_a_terminal_vanishes_when_they_load_at_once():
    out, clock = io.StringIO(), FakeClock()
    display = cli_train._Display(out, interactive=True, clock=clock)
    display(TrainEvent("compiling"))
    clock.now += 0.05
    display(TrainEvent("ready"))
    display(step_event(1))
    text = out.getvalue()
    assert "done in" not in text
    wiped = text.rindex("\r\x1b[K")
    assert "Preparing" not in text[wiped:] and text[wiped:].startswith("\r\x1b[Kstep 1/30")


def test_kernels_line_on_a_terminal_stays_when_they_compiled():
    out, clock = io.StringIO(), FakeClock()
    display = cli_train._Display(out, interactive=True, clock=clock)
    display(TrainEvent("compiling"))
    clock.now += 9.0
    display(TrainEvent("ready"))
    display(step_event(1))
    assert "(the first run compiles them, once)... done in 9.0 s\n" in out.getvalue()


def test_an_error_during_compilation_leaves_no_line_open():
    out = io.StringIO()
    display = cli_train._Display(out, interactive=False, clock=FakeClock())
    display(TrainEvent("compiling"))
    display.close()
    assert out.getvalue().endswith("once)... \n")


def test_a_real_run_prints_the_kernels_line_once_before_the_first_step(text_file, tmp_path):
    result = run("train", text_file, "--out", tmp_path / "m", *TINY, "--steps", "5", "--eval-every", "5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    kernels = [i for i, line in enumerate(lines) if line.startswith("Preparing the compiled kernels")]
    assert len(kernels) == 1
    assert re.fullmatch(r".*\(the first run compiles them, once\)\.\.\. done in \d+\.\d s", lines[kernels[0]])
    assert lines[kernels[0] + 1].startswith("step 1/5 |")


@pytest.mark.slow
def test_a_fresh_environment_shows_the_compilation(text_file, tmp_path):
    """An empty Numba cache: the line appears before the long wait and reports it."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(text_file),
            "--out",
            str(tmp_path / "m"),
            *TINY,
            "--steps",
            "3",
            "--eval-every",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    seconds = float(re.search(r"once\)\.\.\. done in (\d+\.\d) s\n", stdout).group(1))
    assert seconds > 1.0  # compiling takes seconds; loading from the cache a few milliseconds
