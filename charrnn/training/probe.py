"""How fast this machine trains each candidate model: a short timed probe, cached per machine.

The probe trains each of charrnn.training.auto's candidate shapes for a moment (B=32, T=64, random
weights and text, the optimizer included) and records training characters per second. It takes a
few seconds, once: the result is cached in the user's cache directory under a key naming the CPU,
its vector features as Numba compiles for them, the threads, and the versions of charrnn and Numba,
so a new machine, a new release or another thread count measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn import __version__
from charrnn.atomic import atomic_write
from charrnn.model.spec import ModelSpec

PROBE_BATCH, PROBE_SEQ = 32, 64
PROBE_SECONDS = 0.6  # timed training per candidate, after one untimed step
PROBE_VOCAB = 65
CACHE_ENV = "CHARRNN_CACHE_DIR"


@dataclass(frozen=True)
class Probe:
    """Training characters per second of each candidate shape, as "cell:layers:hidden" -> rate."""

    rates: dict[str, float]
    machine: str = ""

    def rate(self, cell: str, layers: int, hidden: int) -> float | None:
        return self.rates.get(shape_key(cell, layers, hidden))


def shape_key(cell: str, layers: int, hidden: int) -> str:
    return f"{cell}:{layers}:{hidden}"


def machine_key(threads: int) -> str:
    """What the probe's numbers depend on, in one line."""
    import numba
    from numba.core import config as numba_config

    from charrnn.kernels.stepgemm import AVX512

    cpu = numba_config.CPU_NAME or _host_cpu()
    features = numba_config.CPU_FEATURES or ""
    return (
        f"charrnn {__version__}, numba {numba.__version__}, cpu {cpu}"
        f"{', avx512' if AVX512 else ''}{', ' + features if features else ''}, {threads} threads"
    )


def _host_cpu() -> str:
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_name()


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charrnn"


def _cache_path(key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"probe-{digest}.json"


def measure_rate(spec: ModelSpec, threads: int, seconds: float = PROBE_SECONDS) -> float:
    """Training characters per second of `spec` at B=32, T=64 on this machine, now."""
    from charrnn.kernels.window import Kernels
    from charrnn.model.params import init_params
    from charrnn.training.optim import Optimizer

    rng = np.random.default_rng(0)
    params = init_params(spec, rng)
    grads = params.zeros_like()
    kernels = Kernels(spec, PROBE_BATCH, PROBE_SEQ, np.float32, threads=threads, dropout=0.1)
    optimizer = Optimizer("adam", params.flat.size, np.float32)
    ids = rng.integers(0, spec.vocab_size, size=(PROBE_BATCH, PROBE_SEQ + 1)).astype(np.int32)
    inputs, targets = np.ascontiguousarray(ids[:, :-1]), np.ascontiguousarray(ids[:, 1:])
    state = np.zeros(spec.state_shape(PROBE_BATCH), dtype=np.float32)

    def step(k: int) -> None:
        kernels.loss_and_grad(params, inputs, targets, state, grads, seed=0, step=k)
        optimizer.step(params.flat, grads.flat, 1e-4)

    step(0)  # compiles or loads the kernels: not timed
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < seconds:
        steps += 1
        step(steps)
    return steps * PROBE_BATCH * PROBE_SEQ / (time.perf_counter() - start)


def run_probe(shapes, threads: int) -> Probe:
    rates = {
        shape_key(cell, layers, hidden): round(measure_rate(ModelSpec(cell, layers, hidden, PROBE_VOCAB), threads), 1)
        for cell, layers, hidden in shapes
    }
    return Probe(rates, machine_key(threads))


def machine_probe(shapes, threads: int) -> tuple[Probe, bool]:
    """The probe for this machine and these shapes: from the cache, or measured now and cached.
    Returns (probe, whether it was measured now). A cache that cannot be read or written is skipped."""
    key = machine_key(threads)
    path = _cache_path(key)
    wanted = {shape_key(*shape) for shape in shapes}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("machine") == key and wanted <= set(saved.get("rates", {})):
            rates = {k: float(v) for k, v in saved["rates"].items() if k in wanted}
            if all(rate > 0 for rate in rates.values()):
                return Probe(rates, key), False
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    probe = run_probe(shapes, threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"machine": key, "rates": probe.rates}, indent=1).encode())
    except OSError:
        pass
    return probe, True
