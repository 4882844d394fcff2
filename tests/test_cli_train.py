import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import main
from charrnn.model import checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden", "24", "--seq-length", "16", "--batch-size", "4", "--threads", "1"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_then_info(text_file, tmp_path):
    out = tmp_path / "model"
    result = run("train", text_file, "--out", out, *TINY, "--steps", 40, "--eval-every", 20)
    assert result.exit_code == 0, result.output
    assert "validation" in result.output and "Done: 40 steps" in result.output
    info = run("info", out)
    assert info.exit_code == 0
    assert re.search(r"\b24 (hidden )?units", info.output) and "corpus" in info.output  # wording of any format
    as_json = json.loads(run("info", out, "--json").output)
    assert as_json["hidden"] == 24 and as_json["step"] == 40


def test_default_model_directory_is_models_slash_stem(text_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("train", text_file, *TINY, "--steps", 5, "--eval-every", 5).exit_code == 0
    assert (tmp_path / "models" / "corpus" / "model.npz").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden", "0"], "--hidden"),
        (["--val-frac", "0.7"], "--val-frac"),
        (["--steps", "0"], "--steps"),
        (["--minutes", "-1"], "--minutes"),
    ],
)
def test_nonsense_options_are_one_line_errors(text_file, tmp_path, args, message):
    result = run("train", text_file, "--out", tmp_path / "m", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # a handled error, not a crash


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\x00\x01\x02binary", "binary"),
        (b"short text", "too short"),
        (b"caf\xe9 " * 500, "offset 3"),
    ],
)
def test_bad_text_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    result = run("train", path, "--out", tmp_path / "m", *TINY, "--steps", 5)
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "model.npz").exists()


def test_info_on_a_missing_model_is_a_one_line_error(tmp_path):
    result = run("info", tmp_path / "nothing")
    assert result.exit_code == 1
    assert "no such model directory" in result.output


def start_training(text_file, out, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(text_file),
            "--out",
            str(out),
            *TINY,
            "--steps",
            "1000000",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def wait_for(path, process, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(text_file, tmp_path):
    out = tmp_path / "m"
    process = start_training(text_file, out, "--eval-every", "100000")
    # Wait until steps are running (the first progress line), then interrupt.
    line = process.stdout.readline()
    while line and not line.startswith("step"):
        line = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted at step" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    _, info = checkpoint.load_training_state(out)
    assert info["step"] > 0
    checkpoint.load_model(out)
    resumed = run("train", "--out", out, "--resume", "--threads", "1", "--steps", info["step"] + 5)
    assert resumed.exit_code == 0, resumed.output
    assert f"Done: {info['step'] + 5} steps" in resumed.output


def test_a_killed_run_leaves_a_directory_that_loads_and_resumes(text_file, tmp_path):
    out = tmp_path / "m"
    process = start_training(text_file, out, "--eval-every", "3")
    wait_for(out / "training_state.npz", process)
    time.sleep(0.5)
    process.kill()
    process.wait()
    model = checkpoint.load_model(out)
    assert np.isfinite(model.params.flat).all()
    _, info = checkpoint.load_training_state(out)
    resumed = run("train", "--out", out, "--resume", "--threads", "1", "--steps", info["step"] + 3)
    assert resumed.exit_code == 0, resumed.output
    assert not list(out.glob(".*.tmp"))
