"""What runs on this machine and why: the CPU, the target Numba compiles for, the kernel path each
cell takes, the BLAS library, versions and cores (`charrnn info --system`).

Nothing here compiles a kernel: the choices are read from the same constants and functions the
kernels use (charrnn.kernels.stepgemm.AVX512, charrnn.kernels.parts.packs, the BLAS binding).
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

# Vector features worth naming (LLVM's names), in order; the rest of LLVM's list is not about
# the kernels' speed.
VECTOR_FEATURES = (
    "sse2",
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512vnni",
    "avx512bf16",
    "neon",
    "fp-armv8",
    "sve",
    "sve2",
)
# The environment variables that change what runs.
SETTINGS = (
    "NUMBA_CPU_NAME",
    "NUMBA_CPU_FEATURES",
    "NUMBA_CACHE_DIR",
    "NUMBA_DISABLE_JIT",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "CHARRNN_BLAS",
)
# A representative hidden size per cell for the kernel paths: the defaults of `charrnn train`.
SHOWN_HIDDEN = {"rnn": 1024, "gru": 512, "lstm": 512}


def cpu_model_name() -> str:
    """The CPU's name as the OS gives it (/proc/cpuinfo on Linux), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _features(text: str) -> dict[str, bool]:
    """LLVM's feature string ("+avx2,-avx512f,...") as a dict."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        out[item[1:]] = item[0] == "+"
    return out


def numba_target() -> dict:
    """The CPU Numba compiles for and the feature string it uses, by Numba's own rule: the CPU
    NUMBA_CPU_NAME names, else this host's; the features NUMBA_CPU_FEATURES gives (empty for
    "generic" when unset: that CPU's own defaults), else this host's. So NUMBA_CPU_NAME=haswell
    alone keeps the host's features (AVX-512 on an AVX-512 host); add NUMBA_CPU_FEATURES= (empty)
    to compile for a Haswell's features only."""
    import llvmlite.binding as llvm
    from numba.core import config

    host_name = llvm.get_host_cpu_name()
    host = dict(llvm.get_host_cpu_features())
    name = config.CPU_NAME or host_name
    if config.CPU_FEATURES is not None:
        given = config.CPU_FEATURES
        features = _features(given)
        source = f"NUMBA_CPU_FEATURES={given!r}" if given else f"{name}'s own (LLVM's defaults)"
    else:
        features = host
        source = "this host's"
    named = [f for f in VECTOR_FEATURES if features.get(f)]
    return {
        "cpu": name,
        "from_environment": bool(config.CPU_NAME),
        "host_cpu": host_name,
        "features_source": source,
        "vector_features": named if features else [],
        "host_vector_features": [f for f in VECTOR_FEATURES if host.get(f)],
    }


def _openblas_details() -> dict:
    """OpenBLAS's version/configuration, the core type its kernels were chosen for, and its
    thread count, asked from numpy's own OpenBLAS (scipy-openblas symbols), where it is one."""
    from charrnn.kernels import blas

    out: dict = {"backend": blas.BLAS_BACKEND}
    try:
        lib = blas._numpy_blas_library()
    except OSError:
        return out
    for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
        corename = getattr(lib, f"{prefix}openblas_get_corename{suffix}", None)
        if corename is None:
            continue
        corename.restype = ctypes.c_char_p
        config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
        threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
        out["core"] = corename().decode(errors="replace")
        if config is not None:
            config.restype = ctypes.c_char_p
            out["config"] = config().decode(errors="replace").strip()
        if threads is not None:
            threads.restype = ctypes.c_int
            out["threads"] = threads()
        break
    return out


def _numpy_blas() -> dict:
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {"name": blas.get("name"), "version": blas.get("version")}
    except (TypeError, KeyError, AttributeError):  # numpy < 1.26 prints only
        return {}


def kernel_paths() -> dict:
    """For each cell, which code does the recurrent products, in training (charrnn.kernels.window
    through stepgemm) and in sampling (charrnn.kernels.sampler), at the default hidden size."""
    from numba.core import config

    from charrnn.kernels import blas, stepgemm
    from charrnn.kernels.parts import packs
    from charrnn.model.spec import ModelSpec

    gemm = (
        "OpenBLAS sgemm"
        if blas.BLAS_BACKEND == "numpy-openblas"
        else "fallback gemm (np.dot; numpy's BLAS is not an ILP64 OpenBLAS)"
    )
    strip = stepgemm.block_columns(4)
    paths = {}
    for cell, hidden in SHOWN_HIDDEN.items():
        gates = ModelSpec(cell, 1, hidden, 2).gates

        def product(n):
            return "packed AVX-512 kernel" if stepgemm.operand_width(n, 4) == strip and stepgemm.AVX512 else gemm

        paths[cell] = {
            "hidden": hidden,
            "train_forward": product(gates * hidden),
            "train_backward": product(hidden),
            "sample": (
                "packed AVX-512 kernel"
                if packs(hidden, gates, 1)
                else "row loop (Numba, vectorised for the target's features)"
            ),
        }
    rule = (
        f"the packed AVX-512 kernel where the product's columns are a multiple of {strip} (float32), else {gemm}"
        if stepgemm.AVX512
        else f"{gemm} for every size (the packed kernel needs AVX-512)"
    )
    if config.DISABLE_JIT:
        rule = "NUMBA_DISABLE_JIT=1: plain Python, very slow"
    return {"avx512_kernel": bool(stepgemm.AVX512), "rule": rule, "cells": paths}


def numba_cache_dir() -> str:
    from numba.core import config

    if config.CACHE_DIR:
        return f"{config.CACHE_DIR} (NUMBA_CACHE_DIR)"
    import charrnn.kernels

    return (
        f"__pycache__ beside the modules ({Path(charrnn.kernels.__file__).parent}), "
        "or Numba's user cache directory where that is not writable"
    )


def describe_system() -> dict:
    """Everything `charrnn info --system` prints, as plain data (JSON-ready)."""
    import llvmlite
    import numba
    import numpy as np

    from charrnn import __version__
    from charrnn.kernels.parts import l2_cache_bytes
    from charrnn.kernels.threads import usable_cores
    from charrnn.sampling import default_threads

    return {
        "charrnn": __version__,
        "machine": platform.machine(),
        "cpu": cpu_model_name(),
        "usable_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "l2_cache_bytes": l2_cache_bytes(),
        "numba_target": numba_target(),
        "kernels": kernel_paths(),
        "sampler_threads": default_threads(),
        "blas": {**_numpy_blas(), **_openblas_details()},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numba_cache": numba_cache_dir(),
        "settings": {name: os.environ[name] for name in SETTINGS if name in os.environ},
    }


def format_system(info: dict) -> list[str]:
    """The lines `charrnn info --system` prints."""
    target = info["numba_target"]
    blas = info["blas"]
    kernels = info["kernels"]
    named = ", ".join(target["vector_features"]) or "none beyond the architecture's baseline (SSE2 on x86-64)"
    lines = [
        f"cpu          {info['cpu']} ({info['machine']}), {info['usable_cores']} usable cores "
        f"of {info['cpu_count']}, L2 {info['l2_cache_bytes'] // 1024} KB per core",
        f"numba target {target['cpu']}"
        + (" (NUMBA_CPU_NAME)" if target["from_environment"] else " (this host)")
        + f"; features {target['features_source']}: {named}",
    ]
    if target["from_environment"]:
        lines.append(
            f"host         {target['host_cpu']}: {', '.join(target['host_vector_features']) or 'no vector extensions'}"
        )
    lines.append(f"step product {kernels['rule']}")
    for cell, path in kernels["cells"].items():
        lines.append(
            f"  {cell:5} H={path['hidden']:<5} train {path['train_forward']} forward, "
            f"{path['train_backward']} backward; sample {path['sample']}"
        )
    core = f", kernels for {blas['core']}" if blas.get("core") else ""
    threads = f", {blas['threads']} threads (1 inside charrnn's kernels)" if "threads" in blas else ""
    lines += [
        f"blas         {blas.get('name') or blas['backend']} {blas.get('version') or ''}".rstrip()
        + f"{core}{threads}; charrnn calls {blas['backend']}",
        f"sampler      {info['sampler_threads']} thread(s) for large models",
        f"versions     charrnn {info['charrnn']}, python {info['python']}, numpy {info['numpy']}, "
        f"numba {info['numba']}, llvmlite {info['llvmlite']}",
        f"numba cache  {info['numba_cache']}",
    ]
    settings = ", ".join(f"{k}={v}" for k, v in info["settings"].items())
    lines.append(f"settings     {settings or 'none of ' + ', '.join(SETTINGS[:5]) + ', ...'}")
    return lines
