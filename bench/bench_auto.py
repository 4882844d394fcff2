"""The automatic model choice against a small grid of fixed settings, each trained for the same time.

    python bench/bench_auto.py TEXT --minutes 1 3 10 [--grid "rnn 1 1024" "lstm 2 512" ...] [--val-frac 0.1]
                               [--isa native|avx2|generic] [--out bench-auto-runs]

For each budget: `charrnn train TEXT --minutes M --val-frac F` with no model options (the automatic
choice), then one run per grid setting (`--cell C --layers L --hidden H`, the cell's other defaults).
Runs are one after another, each alone on the machine (the script prints the load average before
each: compare only runs made on a quiet machine). Prints a Markdown table: the automatic choice, its
best validation bpc, and the best of the grid. `--isa avx2` compiles for AVX2 (NUMBA_CPU_NAME=haswell,
OPENBLAS_CORETYPE=Haswell) with its own Numba cache, `generic` for no vector extensions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GRID = ("rnn 1 1024", "lstm 1 256", "lstm 2 256", "lstm 2 384", "lstm 2 512", "gru 2 512")
ISA_ENV = {
    "native": {},
    "avx2": {"NUMBA_CPU_NAME": "haswell", "OPENBLAS_CORETYPE": "Haswell"},
    "generic": {"NUMBA_CPU_NAME": "generic"},
}


def run(text: str, minutes: float, val_frac: float, out: Path, model: list[str], env: dict) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        text,
        "--minutes",
        str(minutes),
        "--val-frac",
        str(val_frac),
        "--out",
        str(out),
        "--force",
        *model,
    ]
    load = os.getloadavg()[0]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    meta = json.loads((out / "meta.json").read_text())
    (out.parent / f"{out.name}.json").write_text(json.dumps(meta, indent=1))
    print(result.stdout.strip().splitlines()[-2:], file=sys.stderr, flush=True)
    return {
        "bpc": meta["best_val_bpc"],
        "steps": meta["step"],
        "load": load,
        "model": f"{meta.get('cell', 'rnn')} {meta.get('layers', 1)}x{meta['hidden']}",
        "dropout": meta["config"]["dropout"],
        "choice": meta.get("auto_choice", {}).get("reason"),
        "trained_seconds": meta.get("trained_seconds"),
        "validation_seconds": meta.get("validation_seconds"),
        "estimate": meta.get("best_val_bpc_estimate"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--grid", nargs="*", default=list(DEFAULT_GRID))
    parser.add_argument("--val-frac", type=float, default=0.1)
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default="native")
    parser.add_argument("--out", type=Path, default=Path("bench-auto-runs"))
    args = parser.parse_args()
    env = {**os.environ, **ISA_ENV[args.isa]}
    if args.isa != "native":
        env["NUMBA_CACHE_DIR"] = str(Path(env.get("NUMBA_CACHE_DIR", "/tmp/numba-cache")) / args.isa)
        env["CHARRNN_CACHE_DIR"] = str(args.out / f"probe-{args.isa}")
    print(f"text {args.text}, --val-frac {args.val_frac}, ISA {args.isa}")
    print("| minutes | automatic choice | its bpc | best of the grid | its bpc | auto - best |")
    print("|---|---|---|---|---|---|")
    for minutes in args.minutes:
        auto = run(args.text, minutes, args.val_frac, args.out / f"{minutes:g}min-auto", [], env)
        grid = {}
        for setting in args.grid:
            cell, layers, hidden = setting.split()
            grid[setting] = run(
                args.text,
                minutes,
                args.val_frac,
                args.out / f"{minutes:g}min-{cell}-{layers}x{hidden}",
                ["--cell", cell, "--layers", layers, "--hidden", hidden],
                env,
            )
            print(
                f"  {minutes:g} min, {setting}: {grid[setting]['bpc']:.4f} in {grid[setting]['steps']:,} "
                f"steps (load {grid[setting]['load']:.1f})",
                file=sys.stderr,
            )
        best_setting = min(grid, key=lambda s: grid[s]["bpc"])
        best = grid[best_setting]
        print(
            f"| {minutes:g} | {auto['model']}, dropout {auto['dropout']:g} ({auto['steps']:,} steps) | "
            f"{auto['bpc']:.4f} | {best_setting} ({best['steps']:,} steps) | {best['bpc']:.4f} | "
            f"{auto['bpc'] - best['bpc']:+.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
