"""A small core subset of charrnn, run as a user runs it, its numbers printed as JSON: for each
cell a tiny model trained a few steps, resumed for a few more, sampled with a seed, evaluated.

bench/arm64_check.sh runs it on this machine and in an arm64 root under qemu-user, then compares
the two outputs (`--compare A.json B.json`): the same text sampled, bpc within a float tolerance.
Sizes are tiny on purpose: under emulation Numba's compiling takes minutes.

    python bench/core_check.py --out /tmp/core > x86.json
    python bench/core_check.py --compare x86.json arm64.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELLS = [("rnn", 1), ("gru", 1), ("lstm", 2)]
HIDDEN = 16
TOLERANCE = 2e-3  # bits per character: float32 kernels, another CPU's rounding


def corpus(length: int = 12_000) -> str:
    """A text of fixed content (no numpy, no randomness that a version could change)."""
    words = [
        "the",
        "king",
        "and",
        "his",
        "men",
        "rode",
        "on",
        "to",
        "the",
        "sea",
        "ROMEO",
        "JULIET",
        "sweet",
        "love",
        "doth",
        "night",
        "day",
        "o",
        "what",
        "light",
        "through",
        "yonder",
        "window",
        "breaks",
    ]
    state, out = 12345, []
    while sum(len(w) + 1 for w in out) < length:
        state = (1103515245 * state + 12345) % (1 << 31)
        out.append(words[state % len(words)])
        if state % 7 == 0:
            out.append("\n")
    return " ".join(out)[:length]


SECONDS: dict[str, dict[str, float]] = {}  # cell -> command -> wall seconds (not compared)


def charrnn(*args: str, cell: str = "", step: str = "") -> str:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"charrnn {' '.join(args)} failed:\n{done.stderr}")
    SECONDS.setdefault(cell, {})[step] = round(seconds, 1)
    print(f"{cell} {step}: {seconds:.1f} s", file=sys.stderr, flush=True)  # progress: slow under emulation
    return done.stdout


def run(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    text = out / "corpus.txt"
    text.write_text(corpus())
    results = {}
    for cell, layers in CELLS:
        model = out / cell
        common = ["--threads", "1"]
        charrnn(
            "train",
            str(text),
            "--out",
            str(model),
            "--cell",
            cell,
            "--layers",
            str(layers),
            "--hidden",
            str(HIDDEN),
            "--batch-size",
            "4",
            "--seq-length",
            "16",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--force",
            *common,
            cell=cell,
            step="train 3 steps",
        )
        first = json.loads((model / "meta.json").read_text()).get("best_val_bpc")
        charrnn("train", "--out", str(model), "--resume", "--steps", "5", *common, cell=cell, step="resume to 5")
        resumed = json.loads((model / "meta.json").read_text()).get("best_val_bpc")
        sampled = charrnn(
            "sample", str(model), "--prime", "RO", "--length", "40", "--seed", "1", cell=cell, step="sample"
        )
        evaluated = json.loads(charrnn("eval", str(model), str(text), "--json", cell=cell, step="eval"))
        results[cell] = {
            "val_bpc_3_steps": first,
            "val_bpc_resumed_5_steps": resumed,
            "sample": sampled,
            "eval": evaluated,
        }
    return results


def compare(a: dict, b: dict) -> list[str]:
    """What differs between two runs' results (empty: they agree)."""
    problems = []
    for cell in sorted(set(a) | set(b)):
        x, y = a.get(cell), b.get(cell)
        if x is None or y is None:
            problems.append(f"{cell}: only in one run")
            continue
        for key in ("val_bpc_3_steps", "val_bpc_resumed_5_steps"):
            if x[key] is None or y[key] is None or abs(x[key] - y[key]) > TOLERANCE:
                problems.append(f"{cell} {key}: {x[key]} against {y[key]}")
        if x["sample"] != y["sample"]:
            problems.append(f"{cell} sample: {x['sample']!r} against {y['sample']!r}")
        for key, value in x["eval"].items():
            other = y["eval"].get(key)
            if isinstance(value, float) and isinstance(other, float):
                if abs(value - other) > TOLERANCE:
                    problems.append(f"{cell} eval {key}: {value} against {other}")
            elif value != other and key not in ("model", "text", "seconds"):
                problems.append(f"{cell} eval {key}: {value!r} against {other!r}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="working directory (default: a temporary one)")
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        help="compare two outputs of this script instead of running",
    )
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text())["results"] for p in args.compare)
        problems = compare(a, b)
        for line in problems:
            print(line)
        print("the same numbers" if not problems else f"{len(problems)} differences")
        sys.exit(1 if problems else 0)
    import platform

    import numba
    import numpy

    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.out or Path(tmp))
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "numpy": numpy.__version__,
                "numba": numba.__version__,
                "results": results,
                "seconds": SECONDS,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
