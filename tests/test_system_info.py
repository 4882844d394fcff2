"""`charrnn info --system`: what runs on this machine and why, in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def charrnn(*args, **env_changes):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def test_system_report_names_the_cpu_target_kernels_and_libraries(tmp_path):
    cache = tmp_path / "cache"
    ran = charrnn("info", "--system", NUMBA_CACHE_DIR=str(cache), NUMBA_CPU_NAME=None, NUMBA_CPU_FEATURES=None)
    assert ran.returncode == 0, ran.stderr
    labels = [line.split()[0] for line in ran.stdout.splitlines() if not line.startswith("  ")]
    assert labels == ["cpu", "numba", "step", "blas", "sampler", "versions", "numba", "settings"]
    for cell in ("rnn", "gru", "lstm"):
        assert f"\n  {cell} " in ran.stdout
    assert "(this host)" in ran.stdout and str(cache) in ran.stdout
    import llvmlite.binding as llvm

    assert f"numba target {llvm.get_host_cpu_name()} " in ran.stdout
    assert not cache.exists() or not any(cache.rglob("*.nbi"))  # nothing was compiled


def test_system_report_as_json_follows_numba_cpu_name(tmp_path):
    ran = charrnn(
        "info",
        "--system",
        "--json",
        NUMBA_CPU_NAME="generic",
        NUMBA_CACHE_DIR=str(tmp_path / "cache"),
        NUMBA_CPU_FEATURES=None,
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert set(report) >= {
        "cpu",
        "machine",
        "usable_cores",
        "numba_target",
        "kernels",
        "blas",
        "numpy",
        "numba",
        "llvmlite",
        "numba_cache",
        "settings",
    }
    target = report["numba_target"]
    assert target["cpu"] == "generic" and target["from_environment"]
    assert target["vector_features"] == []
    assert report["kernels"]["avx512_kernel"] is False
    for path in report["kernels"]["cells"].values():
        assert "AVX-512" not in path["train_forward"] + path["sample"]
    assert report["settings"]["NUMBA_CPU_NAME"] == "generic"
    lines = charrnn("info", "--system", NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path / "cache")).stdout
    assert "numba target generic (NUMBA_CPU_NAME)" in lines and "\nhost " in lines


@pytest.mark.parametrize(
    "args, words",
    [
        ((), "missing MODEL"),
        (("--system", "models/shakespeare"), "either MODEL or --system"),
    ],
)
def test_info_mistakes_are_one_line_errors(args, words):
    ran = charrnn("info", *args)
    assert ran.returncode != 0 and "Traceback" not in ran.stderr
    errors = [line for line in ran.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and words in errors[0], ran.stderr


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}, "False"),
        ({"NUMBA_CPU_NAME": "generic"}, "False"),
        ({"NUMBA_CPU_NAME": "haswell"}, "host"),  # Numba keeps the host's features
        ({"NUMBA_CPU_FEATURES": "+avx512f,+avx2"}, "True"),
    ],
)
def test_the_avx512_choice_follows_numbas_features(env, expected, tmp_path):
    """stepgemm.AVX512 says what Numba compiles with: NUMBA_CPU_FEATURES where set, else the
    host's features, whatever NUMBA_CPU_NAME names."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path)}
    for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
        full.pop(name, None)
    full.update(env)
    code = (
        "import llvmlite.binding as llvm; from charrnn.kernels import stepgemm; "
        "print(stepgemm.AVX512, bool(llvm.get_host_cpu_features().get('avx512f')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)
    assert done.returncode == 0, done.stderr
    chosen, host = done.stdout.split()
    assert chosen == (host if expected == "host" else expected)
