"""`--isa avx2|generic|native` for the benchmarks: measure what a CPU without this one's vector
extensions runs, on this one, by re-executing the benchmark with both sides compiled for less.

- avx2: Numba compiles for Haswell with Haswell's own features (NUMBA_CPU_FEATURES empty: with
  NUMBA_CPU_NAME alone Numba keeps the host's features, AVX-512 included), OpenBLAS uses its
  Haswell kernels, PyTorch its AVX2 kernels and oneDNN at most AVX2.
- generic: Numba compiles with no vector extension beyond the architecture's baseline (SSE2 on
  x86-64), OpenBLAS uses its Prescott (SSE3) kernels, PyTorch its default (non-vector) kernels
  and oneDNN SSE4.1: the closest to what a new architecture sees.
- native: this CPU, whatever it has (the default; the variables above are removed).
Each ISA gets a Numba cache of its own, so that no build loads another's compiled code.
Call apply_isa() before anything imports numba (it reads its settings at import).
"""

from __future__ import annotations

import os
import sys
import tempfile

ISAS = ("native", "avx2", "generic")
ISA_ENV = {
    "native": {},
    "avx2": {
        "NUMBA_CPU_NAME": "haswell",
        "NUMBA_CPU_FEATURES": "",
        "OPENBLAS_CORETYPE": "Haswell",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
    "generic": {
        "NUMBA_CPU_NAME": "generic",
        "NUMBA_CPU_FEATURES": "",
        "OPENBLAS_CORETYPE": "Prescott",
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
}
KEYS = sorted({key for env in ISA_ENV.values() for key in env})
MARK = "CHARRNN_BENCH_ISA"  # set in the re-executed process: the ISA it runs


def requested(argv: list[str]) -> str | None:
    """The value of --isa in argv (None if absent)."""
    for index, arg in enumerate(argv):
        if arg == "--isa" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--isa="):
            return arg.split("=", 1)[1]
    return None


def cache_dir(isa: str) -> str:
    base = os.environ.get("CHARRNN_BENCH_CACHE") or tempfile.gettempdir()
    return os.path.join(base, f"charrnn-bench-numba-{isa}")


def isa_environment(isa: str, environ: dict) -> dict:
    """environ with the ISA's settings (and its own Numba cache) in place of any others."""
    env = {k: v for k, v in environ.items() if k not in KEYS}
    env.update(ISA_ENV[isa])
    env["NUMBA_CACHE_DIR"] = cache_dir(isa)
    env[MARK] = isa
    return env


def apply_isa(argv: list[str] | None = None) -> str:
    """Re-execute this process with the environment of the --isa asked for, unless it runs with
    it already or none was asked for. Returns the ISA this process runs ("native" without
    --isa). An unknown name is left to the argument parser (add_isa_argument) to refuse."""
    argv = sys.argv[1:] if argv is None else argv
    isa = requested(argv)
    if isa is None:
        return os.environ.get(MARK, "native")
    if isa not in ISAS or os.environ.get(MARK) == isa:
        return isa
    os.execve(sys.executable, [sys.executable, sys.argv[0], *argv], isa_environment(isa, dict(os.environ)))
    raise AssertionError("unreachable")


def add_isa_argument(parser) -> None:
    parser.add_argument(
        "--isa",
        choices=ISAS,
        default="native",
        help="compile Numba, OpenBLAS and PyTorch for this ISA (re-executes with "
        "NUMBA_CPU_NAME etc.; see bench/_isa.py)",
    )


def describe(isa: str) -> str:
    """One line: the ISA and the settings in force (from the environment)."""
    settings = ", ".join(f"{k}={os.environ[k]!r}" for k in KEYS if k in os.environ)
    return f"ISA {isa}" + (f" ({settings})" if settings else " (this CPU's own)")
