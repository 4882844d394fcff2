"""charrnn sweep on a real Ray: a local sweep (layout, results, ASHA stopping a trial built to be
clearly worse), --resume after a Ctrl-C and after a killed driver, and a sweep against a one-machine
cluster started with `ray start --head` on 127.0.0.1. Each test gives Ray a private RAY_TMPDIR and
checks that no process started under it is left running (and ends any that is, by pid, also on
failure)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import make_text
from tests.test_sweep import (
    cleanup_ray_tmp,
    end_processes,
    new_ray_tmp,
    processes_of,
    ray_env,
    run_sweep_cli,
    sweep_cmd,
    wait_gone,
)

pytest.importorskip("ray.tune")
pytestmark = pytest.mark.slow

TRIAL_FILES = {"model.npz", "meta.json", "training_state.npz", "metrics.jsonl"}


@pytest.fixture
def ray_tmp():
    path = new_ray_tmp()
    yield path
    left = cleanup_ray_tmp(path)
    assert left == [], f"Ray processes left running: {left}"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(20000))
    return path


def _results(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _metric_steps(trial_dir):
    return [json.loads(line)["step"] for line in (trial_dir / "metrics.jsonl").read_text().splitlines()]


def _wait_for_second_checkpoint(process, out, seconds=300):
    """Until the sweep's second trial has saved a checkpoint (or the sweep ended, or time ran
    out); fails the test if it never did."""
    state = out / "trials" / "trial_00001" / "training_state.npz"
    deadline = time.monotonic() + seconds
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.exists(), "the second trial never saved a checkpoint"


def test_local_sweep_layout_results_and_asha(tmp_path, corpus, ray_tmp):
    """A learning rate of 1e-5 barely learns in 300 steps: ASHA must stop such a trial at a rung
    where a trial at 1e-2 has already reported."""
    out = tmp_path / "sw"
    result = run_sweep_cli(
        [
            corpus,
            "--out",
            out,
            "--trials",
            3,
            "--trial-steps",
            300,
            "--eval-every",
            30,
            "--hidden",
            16,
            "--lr",
            "1e-2,1e-5",
            "--concurrent",
            1,
            "--threads",
            1,
            "--seed",
            1,
        ],
        ray_env(ray_tmp),
        tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    results = _results(out)
    assert len(results) == 3
    assert [r["trial"] for r in results] == sorted(
        (r["trial"] for r in results), key=lambda t: next(x["best_val_bpc"] for x in results if x["trial"] == t)
    )
    for record in results:
        assert set(record) >= {"trial", "settings", "best_val_bpc", "steps", "seconds", "stopped_early", "status"}
        assert {p.name for p in (out / record["dir"]).iterdir()} >= TRIAL_FILES
        assert record["status"] in ("finished", "stopped early")
    good = [r for r in results if r["settings"]["lr"] == 1e-2]
    bad = [r for r in results if r["settings"]["lr"] == 1e-5]
    assert good and bad
    assert all(r["status"] == "finished" and r["steps"] == 300 for r in good[:1])
    # The trials ran one at a time, in name order (seed 1 draws 1e-2, 1e-5, 1e-5 with this Ray):
    # a bad one after the first good one is stopped at a rung.
    first_good = min(r["trial"] for r in good)
    later_bad = [r for r in bad if r["trial"] > first_good]
    assert later_bad, "the seed should draw a bad trial after a good one"
    assert all(r["stopped_early"] and r["steps"] < 300 for r in later_bad)
    assert min(r["best_val_bpc"] for r in good) < min(r["best_val_bpc"] for r in bad) - 0.5
    # DIR/best: a relative link to the best trial, an ordinary model directory.
    assert os.readlink(out / "best") == results[0]["dir"]
    meta = json.loads((out / "best" / "meta.json").read_text())
    assert meta["best_val_bpc"] == pytest.approx(results[0]["best_val_bpc"])
    assert meta["corpus"]["path"] == str(corpus.resolve())  # the driver's text, not a worker's copy
    settings = json.loads((out / "sweep.json").read_text())
    assert settings["corpus"]["name"] == "corpus.txt" and settings["settings"]["trials"] == 3
    info = subprocess.run(
        ["charrnn", "info", str(out / "best")], capture_output=True, text=True, env=ray_env(ray_tmp), timeout=120
    )
    assert info.returncode == 0 and "validation" in info.stdout
    # The ranked table closes the output.
    table = result.stdout[result.stdout.index("rank  trial") :]
    assert results[0]["trial"] in table.splitlines()[1]
    assert processes_of(ray_tmp) == []


def test_resume_after_ctrl_c_keeps_finished_trials(tmp_path, corpus, ray_tmp):
    """Ctrl-C while the second trial trains (after its first checkpoint), then --resume: the first
    trial is kept as it was, the second continues from its checkpoint, and, as it has the first's
    settings, ends exactly where the first did."""
    out = tmp_path / "sw"
    args = [
        corpus,
        "--out",
        out,
        "--trials",
        2,
        "--trial-steps",
        4000,
        "--eval-every",
        200,
        "--hidden",
        16,
        "--lr",
        "4e-3",
        "--concurrent",
        1,
        "--threads",
        1,
        "--no-early-stop",
    ]
    env = ray_env(ray_tmp)
    process = subprocess.Popen(
        sweep_cmd(*args), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_second_checkpoint(process, out)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert f"charrnn sweep --out {out} --resume" in stderr
    before = {r["trial"]: r for r in _results(out)}
    assert before["trial_00000"]["status"] == "finished"
    assert before["trial_00001"]["status"] == "unfinished"
    steps_then = _metric_steps(out / "trials" / "trial_00001")
    assert 0 < steps_then[-1] < 4000
    lines_then = (out / "trials" / "trial_00001" / "metrics.jsonl").read_text().splitlines()
    kept = {name: (out / "trials" / "trial_00000" / name).read_bytes() for name in TRIAL_FILES}

    result = run_sweep_cli(["--out", out, "--resume"], env, tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    after = {r["trial"]: r for r in _results(out)}
    assert {r["status"] for r in after.values()} == {"finished"}
    assert {name: (out / "trials" / "trial_00000" / name).read_bytes() for name in TRIAL_FILES} == kept
    steps = _metric_steps(out / "trials" / "trial_00001")
    assert steps == sorted(set(steps)) and steps[-1] == 4000 and steps[: len(steps_then)] == steps_then
    # Continued, not trained again from the start: the records made before the Ctrl-C are the very
    # lines written then (a second run from step 0 would write them again with other times).
    lines = (out / "trials" / "trial_00001" / "metrics.jsonl").read_text().splitlines()
    assert lines[: len(lines_then)] == lines_then
    assert "trial_00000 started" not in result.stdout  # a finished trial is not run again
    # An exact resume: the same settings and seed give the same model, interrupted or not.
    assert after["trial_00001"]["best_val_bpc"] == after["trial_00000"]["best_val_bpc"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return f"pid {pid} (gone)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_on_a_cluster_with_address(tmp_path, corpus, ray_tmp):
    """The cluster keeps to 127.0.0.1 and uses token authentication (Ray's default for clusters
    since 2.59) with a token of its own, which the driver is given the way Ray documents."""
    port = _free_port()
    token = tmp_path / "auth_token"
    token.write_text(os.urandom(16).hex())
    env = ray_env(ray_tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--min-worker-port",
            "20000",
            "--max-worker-port",
            "29999",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert head.poll() is None, "ray start --head exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        out = tmp_path / "sw"
        result = run_sweep_cli(
            [
                corpus,
                "--out",
                out,
                "--trials",
                2,
                "--trial-steps",
                100,
                "--eval-every",
                50,
                "--hidden",
                "16,24",
                "--concurrent",
                2,
                "--address",
                f"127.0.0.1:{port}",
            ],
            env,
            tmp_path,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"the Ray cluster at 127.0.0.1:{port}" in result.stdout
        results = _results(out)
        assert len(results) == 2 and all(r["status"] == "finished" for r in results)
        for record in results:
            assert {p.name for p in (out / record["dir"]).iterdir()} >= TRIAL_FILES
        assert (out / "best" / "model.npz").is_file()
        assert head.poll() is None  # the driver leaves the cluster running
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def test_resume_after_the_driver_is_killed(tmp_path, corpus, ray_tmp):
    """SIGKILL to the driver, then --resume: the trial that was training continues from its last
    checkpoint (exactly: it ends where its twin ended)."""
    out = tmp_path / "sw"
    args = [
        corpus,
        "--out",
        out,
        "--trials",
        2,
        "--trial-steps",
        3000,
        "--eval-every",
        200,
        "--hidden",
        16,
        "--lr",
        "4e-3",
        "--concurrent",
        1,
        "--threads",
        1,
        "--no-early-stop",
    ]
    env = ray_env(ray_tmp)
    process = subprocess.Popen(
        sweep_cmd(*args), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_second_checkpoint(process, out)
    finally:
        process.kill()
        process.wait()
    # Ray's processes share the fate of the driver that started them, but its agents
    # (ray::DashboardAgent, ray::RuntimeEnvAgent) sometimes outlive a SIGKILL: they are ended
    # here (by pid), and named.
    left = wait_gone(ray_tmp, timeout=20)
    if left:
        names = [_cmdline(pid).strip() for pid in left]
        end_processes(left)
        warnings.warn(f"after SIGKILL to the driver these outlived it by 20 s: {names}", stacklevel=1)
    result = run_sweep_cli(["--out", out, "--resume"], env, tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    after = {r["trial"]: r for r in _results(out)}
    assert {r["status"] for r in after.values()} == {"finished"}
    steps = _metric_steps(out / "trials" / "trial_00001")
    assert steps == sorted(set(steps)) and steps[-1] == 3000
    assert after["trial_00001"]["best_val_bpc"] == after["trial_00000"]["best_val_bpc"]
