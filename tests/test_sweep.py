"""charrnn sweep: search spaces, settings, the sweep directory, and bad input, without starting Ray
(tests/test_sweep_ray.py runs real Ray sweeps; marked slow).

The helpers at the top find (and end) Ray processes by the private RAY_TMPDIR each test gives them,
so a test only ever touches processes it started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import main
from charrnn.errors import InputError
from charrnn.sweep import SweepSettings, layout, parse_dimension, parse_space
from charrnn.sweep.layout import TrialRecord
from charrnn.sweep.ray_setup import SweepError, resolve_address
from charrnn.sweep.space import DEFAULT_SPACE


def ray_env(ray_tmp: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def processes_of(ray_tmp: Path) -> list[int]:
    """Pids of live processes started with RAY_TMPDIR=ray_tmp (Ray passes it on to all it starts)."""
    marker = f"RAY_TMPDIR={ray_tmp}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def end_processes(pids, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, to exactly these pids."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(ray_tmp: Path, timeout: float = 30.0) -> list[int]:
    """Waits for the processes of ray_tmp to exit; the pids still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(ray_tmp)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def new_ray_tmp() -> Path:
    # Short: Ray's socket paths live under it and must fit in 107 bytes.
    return Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))


def cleanup_ray_tmp(ray_tmp: Path) -> list[int]:
    """Ends whatever Ray left under ray_tmp; returns the pids that had been left running."""
    left = wait_gone(ray_tmp, timeout=20.0)
    if left:
        end_processes(left)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return left


def sweep_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "charrnn", "sweep", *map(str, args)]


def run_sweep_cli(args, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Fast tests: no Ray process is started by any of them.


def test_choice_range_and_fixed_values():
    dim = parse_dimension("hidden", "256, 512,512,1024")
    assert dim.values == (256, 512, 1024) and not dim.is_range and not dim.is_fixed
    dim = parse_dimension("lr", "1e-3:5e-3")
    assert (dim.low, dim.high, dim.log) == (1e-3, 5e-3, True)
    dim = parse_dimension("seq_length", "32:128")
    assert (dim.low, dim.high, dim.log) == (32, 128, False)
    assert parse_dimension("batch_size", "16").is_fixed


def test_tune_objects_sample_inside_the_space():
    pytest.importorskip("ray.tune")
    lr = parse_dimension("lr", "1e-3:5e-3").to_tune()
    hidden = parse_dimension("hidden", "16:24").to_tune()
    choice = parse_dimension("hidden", "16,32").to_tune()
    for _ in range(200):
        assert 1e-3 <= lr.sample() <= 5e-3
        assert 16 <= hidden.sample() <= 24
        assert choice.sample() in (16, 32)
    assert {hidden.sample() for _ in range(400)} == set(range(16, 25))  # both ends included
    assert parse_dimension("hidden", "64").to_tune() == 64


def test_the_learning_rate_is_searched_log_uniformly():
    """Each decade of 1e-4..1e-1 gets a third of the draws (uniform would give the top decade 90%),
    and within a decade the draws are log-uniform too (uniform: 0.5 would sit near 5.5e-3)."""
    pytest.importorskip("ray.tune")
    lr = parse_dimension("lr", "1e-4:1e-1").to_tune()
    draws = np.array([lr.sample() for _ in range(6000)])
    assert ((draws >= 1e-4) & (draws <= 1e-1)).all()
    decades = np.histogram(np.log10(draws), bins=[-4, -3, -2, -1])[0] / len(draws)
    assert np.all(np.abs(decades - 1 / 3) < 0.04), decades
    assert abs(np.median(np.log10(draws)) - (-2.5)) < 0.08  # log-uniform's median: 10^-2.5
    # The 'other' dimensions stay uniform.
    hidden = parse_dimension("seq_length", "10:1000").to_tune()
    assert abs(np.median([hidden.sample() for _ in range(4000)]) - 505) < 40


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("lr", "5e-3:1e-3", "inverted"),
        ("lr", "1e-3:1e-3", "empty"),
        ("hidden", "", "give a value"),
        ("hidden", "256,,512", "empty item"),
        ("hidden", "12.5", "not a whole number"),
        ("lr", "fast", "not a number"),
        ("lr", "1e-3:", "both given"),
        ("hidden", "0,16", "positive"),
        ("lr", "-1:1", "positive"),
        ("cell", "rnn,transformer", "unknown cell"),
        ("cell", "rnn:gru", "comma list"),
        ("optimizer", "adam", "not a setting"),
    ],
)
def test_bad_dimensions_are_one_line_input_errors(name, text, words):
    with pytest.raises(InputError) as caught:
        parse_dimension(name, text)
    message = str(caught.value)
    assert words in message and "\n" not in message


def test_default_space_is_used_when_none_is_given():
    assert set(parse_space({})) == set(DEFAULT_SPACE)
    assert list(parse_space({"lr": "1e-3", "hidden": "16"})) == ["hidden", "lr"]


@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(trials=0), "--trials"),
        (dict(concurrent=0), "--concurrent"),
        (dict(threads=0), "--threads"),
        (dict(trial_minutes=0.0), "--trial-minutes"),
        (dict(trial_steps=0), "--trial-steps"),
        (dict(eval_every=0), "--eval-every"),
        (dict(val_frac=0.9), "--val-frac"),
        (dict(encoding="no-such-codec"), "--encoding"),
    ],
)
def test_bad_settings(settings, words):
    with pytest.raises(InputError, match=words):
        SweepSettings(space={"hidden": "16"}, **settings).check()


def test_budget_defaults_to_minutes():
    assert SweepSettings().budget() == {"minutes": 5.0, "steps": None}
    assert SweepSettings(trial_steps=100).budget() == {"minutes": None, "steps": 100}


def test_settings_round_trip_through_json():
    settings = SweepSettings(space={"hidden": "16,32"}, trials=3, trial_steps=50, concurrent=2)
    assert SweepSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings


def test_trial_file_names_are_the_checkpoint_modules():
    from charrnn.model import checkpoint

    assert set(layout.TRIAL_FILES) == {
        checkpoint.MODEL_FILE,
        checkpoint.META_FILE,
        checkpoint.METRICS_FILE,
        checkpoint.STATE_FILE,
    }
    assert layout.STATE_FILE == checkpoint.STATE_FILE  # copied last: it points past the model


def test_the_sink_imports_neither_ray_nor_the_trainer():
    code = (
        "import sys, charrnn.sweep.sink; "
        "print(sorted(m for m in ('ray', 'numba', 'charrnn.training.loop') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_results_are_ranked_and_round_trip(tmp_path):
    records = [
        TrialRecord("trial_00000", "finished", {"hidden": 16}, 2.5, 2.6, 100, 1.0),
        TrialRecord("trial_00001", "stopped early", {"hidden": 32}, 3.0, 3.0, 20, 0.2),
        TrialRecord("trial_00002", "failed", {"hidden": 64}, error="diverged"),
        TrialRecord("trial_00003", "finished", {"hidden": 8}, 1.5, 1.5, 100, 1.0),
    ]
    layout.write_results(tmp_path, records)
    lines = [json.loads(line) for line in (tmp_path / layout.RESULTS_FILE).read_text().splitlines()]
    assert [line["trial"] for line in lines] == ["trial_00003", "trial_00000", "trial_00001", "trial_00002"]
    assert lines[2]["stopped_early"] is True and lines[0]["stopped_early"] is False
    assert lines[0]["dir"] == "trials/trial_00003"
    assert set(lines[0]) >= {"settings", "best_val_bpc", "steps", "seconds", "status"}
    again = layout.read_results(tmp_path)
    assert again["trial_00002"].error == "diverged" and again["trial_00000"].best_val_bpc == 2.5


def test_best_link_is_relative_and_survives_moving_the_directory(tmp_path):
    out = tmp_path / "sweep"
    (out / "trials" / "trial_00001").mkdir(parents=True)
    (out / "trials" / "trial_00001" / "meta.json").write_text("{}")
    layout.link_best(out, "trial_00001")
    assert os.readlink(out / "best") == "trials/trial_00001"
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    assert (moved / "best" / "meta.json").read_text() == "{}"
    layout.link_best(moved, None)
    assert not (moved / "best").exists()


def test_clear_sweep_leaves_other_files(tmp_path):
    for name in ("trials/trial_00000", "tune/sweep"):
        (tmp_path / name).mkdir(parents=True)
    for name in ("sweep.json", "results.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    layout.clear_sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_sink_writes_trial_files_atomically_and_names_the_drivers_corpus(tmp_path):
    from charrnn.sweep.sink import TrialSink

    sink = TrialSink(str(tmp_path / "trials"), "/data/corpus.txt")
    meta = {"format": "charrnn-model", "corpus": {"name": "corpus", "path": "/tmp/x/corpus.txt"}}
    sink.save("trial_00002", {"meta.json": json.dumps(meta).encode(), "model.npz": b"npz", "other.bin": b"ignored"})
    directory = tmp_path / "trials" / "trial_00002"
    assert sorted(p.name for p in directory.iterdir()) == ["meta.json", "model.npz"]
    assert json.loads((directory / "meta.json").read_text())["corpus"]["path"] == "/data/corpus.txt"
    assert sink.load("trial_00002")["model.npz"] == b"npz"
    assert sink.load("trial_00009") == {}
    with pytest.raises(ValueError):
        sink.save("../escape", {"model.npz": b"x"})


def test_mirror_sends_only_what_changed(tmp_path):
    ray_parts = pytest.importorskip("charrnn.sweep.ray_parts")
    sent = []

    class FakeSink:
        class save:
            @staticmethod
            def remote(name, files):
                sent.append(dict(files))

    (tmp_path / "model.npz").write_bytes(b"a")
    (tmp_path / "metrics.jsonl").write_text("1\n")
    mirror = ray_parts._Mirror(tmp_path, "trial_00000", FakeSink)
    ray_get = ray_parts.ray.get
    ray_parts.ray.get = lambda ref: ref
    try:
        mirror.push()
        (tmp_path / "metrics.jsonl").write_text("1\n2\n")
        mirror.push()
        mirror.push()
    finally:
        ray_parts.ray.get = ray_get
    assert [sorted(files) for files in sent] == [["metrics.jsonl", "model.npz"], ["metrics.jsonl"]]


def test_unreachable_address_fails_before_ray():
    with pytest.raises(SweepError, match="no Ray cluster answers"):
        resolve_address(f"127.0.0.1:{_closed_port()}")
    with pytest.raises(InputError, match="HOST:PORT"):
        resolve_address("nonsense")
    with pytest.raises(InputError, match="Ray Client"):
        resolve_address("ray://127.0.0.1:10001")
    assert resolve_address(None) is None or os.environ.get("RAY_ADDRESS")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_cli_refuses_settings_on_resume_and_an_existing_sweep(tmp_path, text_file):
    runner = CliRunner()
    out = tmp_path / "sw"
    result = runner.invoke(main, ["sweep", "--out", str(out), "--resume", "--trials", "3"])
    assert result.exit_code != 0 and "keeps its settings" in result.output
    result = runner.invoke(main, ["sweep", "--out", str(out), "--resume"])
    assert result.exit_code != 0 and "no sweep to resume" in result.output
    out.mkdir()
    (out / "sweep.json").write_text("{}")
    result = runner.invoke(main, ["sweep", str(text_file), "--out", str(out), "--hidden", "16"])
    assert result.exit_code != 0 and "already holds a sweep" in result.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["--trials", "0"], "--trials must be 1 or more"),
        (["--lr", "5e-3:1e-3"], "inverted"),
        (["--hidden", "64:64"], "empty"),
        (["--cell", "lstm,transformer"], "unknown cell"),
        (["MISSING"], "no such file"),
        (["--address", "CLOSED"], "no Ray cluster answers"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_ray_process(tmp_path, text_file, args, words):
    """A real process: the message is one line, no traceback, non-zero exit, nothing left behind."""
    ray_tmp = new_ray_tmp()
    try:
        if "MISSING" in args:
            args = [str(tmp_path / "missing.txt") if a == "MISSING" else a for a in args]
        else:
            args = [str(text_file), *(f"127.0.0.1:{_closed_port()}" if a == "CLOSED" else a for a in args)]
        result = run_sweep_cli([*args, "--out", tmp_path / "sw"], ray_env(ray_tmp), tmp_path, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], result.stderr
        assert not (tmp_path / "sw" / "tune").exists()
        assert processes_of(ray_tmp) == []
    finally:
        cleanup_ray_tmp(ray_tmp)


def test_without_ray_it_says_what_to_install(tmp_path, text_file):
    code = (
        "import sys; sys.modules['ray'] = None; sys.argv = ['charrnn', 'sweep', "
        f"{str(text_file)!r}, '--out', {str(tmp_path / 'sw')!r}]; "
        "from charrnn.cli import main; main()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ['Error: charrnn sweep needs Ray Tune: pip install "charrnn[sweep]"']
    assert not (tmp_path / "sw").exists()


def test_help_works_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None; sys.argv = ['charrnn', 'sweep', '-h']; "
        "from charrnn.cli import main; main()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--trial-minutes" in result.stdout


@pytest.mark.parametrize(
    "data, words", [(b"", "empty"), (b"  \n", "holds no text"), (b"caf\xe9 au lait", "not utf-8 text")]
)
def test_a_text_no_trial_could_read_fails_before_ray(tmp_path, data, words):
    from charrnn.sweep import run_sweep

    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(InputError, match=words):
        run_sweep(path, tmp_path / "sw", SweepSettings(space={"hidden": "16"}))
    assert not (tmp_path / "sw" / "sweep.json").exists()
