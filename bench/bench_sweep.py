"""What Ray costs a sweep: a 1-minute trial run by `charrnn sweep` against the same training run
by `charrnn train` alone, same settings, same text, same threads.

Run by hand from the repository root (never a test):

    python bench/bench_sweep.py                      # 2 pairs of 1-minute runs, about 5 minutes
    python bench/bench_sweep.py --trials 4 --pairs 1 # 4 trials in one sweep against 4 trainings
    python bench/bench_sweep.py --pairs 3 --hidden 512 --text corpora/tiny-shakespeare.txt

Each pair runs, in turn,

    charrnn train TEXT --out A --minutes M --hidden H --eval-every E --threads N
    charrnn sweep TEXT --out B --trials 1 --trial-minutes M --hidden H --eval-every E \
        --threads N --concurrent 1 --no-early-stop

(with --trials N: N such trainings one after the other against one sweep of N trials, one at a
time, which pays Ray's start-up once and reuses the trial's actor) in fresh processes (the Numba
cache warm for both: a first, untimed `charrnn train` fills it),
and reports for each: the wall time of the whole command, the characters trained (steps x batch x
sequence, from the model directory's metrics.jsonl), the end-to-end throughput (characters per
wall-clock second, everything included: imports, Ray's start-up, the trial's start, reporting,
shutdown) and the training throughput as train() counts it (characters per second of training).
Ray's share is 1 - sweep's end-to-end throughput / train's: the target is at most 10%. As
training speed on a busy machine swings by more than that from one minute to the next, it also
shows the share of wall time alone: 1 - (seconds trained / wall seconds) of the sweep over the same
ratio of train, which leaves the training speed out.
For the sweep it also shows when each phase began (Ray up, trial started, trial ended), from the
command's own output.

Without --text it trains on a generated 1 MB English-like text (a fixed lexicon, seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def generated_text(n_chars: int = 1_000_000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    weights = np.array(
        [
            12.7,
            9.1,
            8.2,
            7.5,
            7.0,
            6.7,
            6.3,
            6.1,
            6.0,
            4.3,
            4.0,
            2.8,
            2.8,
            2.4,
            2.4,
            2.2,
            2.0,
            2.0,
            1.9,
            1.5,
            1.0,
            0.8,
            0.2,
            0.2,
            0.1,
            0.1,
        ]
    )
    lexicon = ["".join(rng.choice(letters, size=rng.integers(1, 9), p=weights / weights.sum())) for _ in range(400)]
    out, length = [], 0
    while length < n_chars:
        words = rng.choice(lexicon, size=rng.integers(4, 14))
        line = " ".join(words).capitalize() + rng.choice([".", ",", ";", "!", "?"]) + "\n"
        out.append(line)
        length += len(line)
    return "".join(out)[:n_chars]


def last_metrics(model_dir: Path) -> dict:
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def run_timed(cmd: list[str], env: dict) -> tuple[float, list[tuple[float, str]], int]:
    """Wall seconds of the whole command, its output lines with the second each arrived."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines = []
    for line in process.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
    code = process.wait()
    return time.perf_counter() - start, lines, code


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", type=Path, help="Text to train on (default: generated, 1 MB).")
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--cell", default="rnn")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument(
        "--trials", type=int, default=1, help="Trials in the sweep, against as many `charrnn train` runs."
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp), PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    try:
        text = args.text
        if text is None:
            text = work / "generated.txt"
            text.write_text(generated_text())
        common = ["--hidden", str(args.hidden), "--eval-every", str(args.eval_every), "--threads", str(args.threads)]
        if args.cell != "rnn":
            common += ["--cell", args.cell]
        charrnn = [sys.executable, "-m", "charrnn"]
        print(
            f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"load average {loadavg()}"
        )
        print(
            f"text: {text} ({text.stat().st_size:,} bytes); {args.cell} H={args.hidden}, "
            f"{args.minutes:g} min, eval every {args.eval_every}, {args.threads} threads"
        )
        # Fill the Numba cache first, so neither side pays for compiling.
        subprocess.run(
            [*charrnn, "train", str(text), "--out", str(work / "warm"), "--steps", "2", *common],
            env=env,
            cwd=ROOT,
            capture_output=True,
            check=True,
        )

        rows = []
        for pair in range(args.pairs):
            walls_a, steps_a, trained_a = 0.0, 0, 0.0
            for trial in range(args.trials):
                a = work / f"train{pair}-{trial}"
                wall, _, code = run_timed(
                    [*charrnn, "train", str(text), "--out", str(a), "--minutes", str(args.minutes), *common], env
                )
                if code:
                    raise SystemExit(f"charrnn train failed ({code})")
                config = json.loads((a / "meta.json").read_text())["config"]
                chars_per_step = config["batch_size"] * config["seq_length"]
                metrics = last_metrics(a)
                walls_a, steps_a, trained_a = (
                    walls_a + wall,
                    steps_a + metrics["step"],
                    trained_a + metrics["elapsed"],
                )
                shutil.rmtree(a, ignore_errors=True)
            b = work / f"sweep{pair}"
            wall_b, lines_b, code_b = run_timed(
                [
                    *charrnn,
                    "sweep",
                    str(text),
                    "--out",
                    str(b),
                    "--trials",
                    str(args.trials),
                    "--trial-minutes",
                    str(args.minutes),
                    "--concurrent",
                    "1",
                    "--no-early-stop",
                    *common,
                ],
                env,
            )
            if code_b:
                print("\n".join(line for _, line in lines_b))
                raise SystemExit(f"charrnn sweep failed ({code_b})")
            results = [json.loads(line) for line in (b / "results.jsonl").read_text().splitlines()]
            steps_b = sum(r["steps"] for r in results)
            trained_b = sum(r["seconds"] for r in results)
            row = {"pair": pair, "load": loadavg()}
            for side, wall, steps, trained in (
                ("train", walls_a, steps_a, trained_a),
                ("sweep", wall_b, steps_b, trained_b),
            ):
                chars = steps * chars_per_step
                row[side] = {
                    "wall": wall,
                    "steps": steps,
                    "trained_s": trained,
                    "e2e": chars / wall,
                    "training": chars / trained,
                }
            phases = {}
            for seconds, line in lines_b:
                for key, marker in (
                    ("ray up", "Ray: "),
                    ("first trial started", "started:"),
                    ("last trial ended", "finished:"),
                    ("table", "rank  trial"),
                ):
                    if marker in line and (key not in phases or key == "last trial ended"):
                        phases[key] = seconds
            row["phases"] = phases
            row["share"] = 1 - row["sweep"]["e2e"] / row["train"]["e2e"]
            # The same, had the sweep trained as fast as train() alone did (Ray's fixed costs only):
            row["fixed_share"] = 1 - (trained_b / wall_b) / (trained_a / walls_a)
            rows.append(row)
            t, s = row["train"], row["sweep"]
            print(
                f"pair {pair}: train x{args.trials} {t['wall']:.1f} s wall, {t['steps']:,} steps, "
                f"{t['e2e']:,.0f} chars/s end to end, {t['training']:,.0f} training | "
                f"sweep {s['wall']:.1f} s wall, {s['steps']:,} steps, {s['e2e']:,.0f} end to end, "
                f"{s['training']:,.0f} training | Ray's share {row['share']:.1%}, of wall time "
                f"{row['fixed_share']:.1%} (+{s['wall'] - t['wall']:.1f} s; training "
                f"{t['trained_s']:.1f} s alone, {s['trained_s']:.1f} s in the sweep) | sweep phases "
                + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
                + f" | load {row['load']}"
            )
            shutil.rmtree(b, ignore_errors=True)
        share = statistics.median(r["share"] for r in rows)
        fixed = statistics.median(r["fixed_share"] for r in rows)
        training = statistics.median(r["sweep"]["training"] / r["train"]["training"] for r in rows)
        print(
            f"median Ray's share of end-to-end throughput: {share:.1%} (target: at most 10%); "
            f"of wall time alone: {fixed:.1%}; training throughput inside the trial / alone: "
            f"{training:.3f}; load average now {loadavg()}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
