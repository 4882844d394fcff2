"""Training and inference throughput of charrnn's kernels, side by side with PyTorch.

Run by hand from the repository root (never a test):

    python bench/bench_train.py --wait-quiet 600     # the full benchmark (about 15 minutes on a
                                                     # quiet machine; waits for idle cores)
    python bench/bench_train.py --quick              # a rough look in about a minute
    python bench/bench_train.py --sizes 512 --loads 0 --no-torch
    python bench/bench_train.py --cell rnn,lstm,gru --sizes 128,256,512 --loads 0 --no-infer
    python bench/bench_train.py --cell lstm --layers 2 --quick

For each cell (`--cell`, a comma-separated list; rnn, gru, lstm), `--layers` layers and shape
(V=65, float32; H=128/256/512 at B=32 T=64, and H=512 at B=64 T=128):
training chars/s (loss_and_grad + gradient-norm clip + Adam step, hidden state carried) as the
median of timed windows after compilation; PyTorch's figure for the same shape when torch is
installed (bench/_torch_peer.py, in its own process) and the ratio; numpy's float32 matmul rate
(512x512 and the recurrent step's own shape) and our figure as a fraction of what it allows;
our GFLOP/s, counting 6H(GH + V) flops per character for one layer of G gate blocks (rnn 1, gru 3,
lstm 4) plus 12H*GH for each further layer (its recurrent and its input product), and each cell's
GFLOP/s as a fraction of the vanilla RNN's at the same shape when both are in the run; inference
(forward only) both ways; the first training step in a fresh process with a cold and a warm Numba
cache. The PyTorch peer is nn.RNN / nn.GRU / nn.LSTM with the same layers. `--loads 0,1` repeats the training
figures with one busy process running beside them (multi-threaded code can collapse then).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _isa import add_isa_argument, apply_isa, describe  # noqa: E402  (bench/ is on sys.path)

ISA = apply_isa()  # before numba is imported: it may re-execute this script
from _timing import windows_rate  # noqa: E402

from charrnn.kernels.blas import BLAS_BACKEND  # noqa: E402
from charrnn.kernels.window import Kernels  # noqa: E402
from charrnn.model.params import init_params  # noqa: E402
from charrnn.model.spec import CELLS, GATES, ModelSpec  # noqa: E402
from charrnn.training.optim import Optimizer, clip_grad_norm  # noqa: E402

VOCAB = 65
SHAPES = {"128": (128, 32, 64), "256": (256, 32, 64), "512": (512, 32, 64), "512x64x128": (512, 64, 128)}
# Training speed against PyTorch's, per cell and shape (the vanilla RNN's from issue 5).
TARGETS = {
    "rnn": {"128": 4.0, "256": 2.2, "512": 1.9, "512x64x128": 1.8},
    "lstm": {"128": 1.3, "256": 1.2, "512": 1.1, "512x64x128": 1.1},
    "gru": {"128": 2.0, "256": 2.0, "512": 2.0, "512x64x128": 2.0},
}


# -- machine ------------------------------------------------------------------------------------


def busy_fraction(seconds=1.0):
    """Fraction of all cores busy over `seconds` (from /proc/stat)."""

    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


class LoadMeter:
    """Share of the cores used by other processes while the block ran (ours and our children
    that finished inside it are subtracted); tells whether a figure was taken on a quiet machine."""

    @staticmethod
    def _read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        busy_jiffies = sum(values) - values[3] - values[4]
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_seconds = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        return time.perf_counter(), busy_jiffies / os.sysconf("SC_CLK_TCK"), own_seconds

    def __enter__(self):
        self.start = self._read()
        return self

    def __exit__(self, *exc):
        end = self._read()
        elapsed = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        self.other_load = max(0.0, others / (elapsed * (os.cpu_count() or 1)))
        return False


def wait_quiet(limit_seconds, threshold=0.15):
    """Wait (up to limit_seconds) until other processes leave the cores idle; the last reading."""
    deadline = time.time() + limit_seconds
    while True:
        busy = busy_fraction(0.5)
        if busy < threshold or time.time() >= deadline:
            return busy


def cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class BusyProcesses:
    """`count` processes spinning in a Python loop, started on entry and killed on exit."""

    def __init__(self, count):
        self.count = count
        self.procs = []

    def __enter__(self):
        for _ in range(self.count):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        return False


# -- timing -------------------------------------------------------------------------------------


def matmul_rate(m, k, n, seconds=1.0):
    """numpy float32 (m, k) @ (k, n) in GFLOP/s with numpy's default BLAS threads."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    for _ in range(3):
        np.matmul(a, b, out=c)
    best = []
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            np.matmul(a, b, out=c)
            count += 1
        best.append(2.0 * m * k * n * count / (time.perf_counter() - start) / 1e9)
    return max(best)


def flops_per_char(hidden, cell="rnn", layers=1, vocab=VOCAB):
    """Forward and backward products per character: 6H(GH + V) for one layer and the output layer
    (layer 0's input product is a gather), 12H*GH for each further layer (recurrent and input)."""
    gh = GATES[cell] * hidden
    return 6 * hidden * (gh + vocab) + 12 * hidden * gh * (layers - 1)


# -- ours ---------------------------------------------------------------------------------------


def ours_rates(cell, layers, hidden, batch, seq, threads, windows, window_seconds, infer=True, dropout=0.0):
    rng = np.random.default_rng(0)
    spec = ModelSpec(cell, layers, hidden, VOCAB)
    params = init_params(spec, rng, np.float32)
    grads = params.zeros_like()
    kernels = Kernels(spec, batch, seq, np.float32, threads=threads, dropout=dropout)
    opt = Optimizer("adam", params.flat.size, np.float32)
    batches = [
        (rng.integers(0, VOCAB, (batch, seq)).astype(np.int32), rng.integers(0, VOCAB, (batch, seq)).astype(np.int32))
        for _ in range(8)
    ]
    state = {"i": 0}
    kernels.state_last[...] = 0.0

    def train_step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        kernels.loss_and_grad(params, x, y, kernels.state_last, grads, seed=0, step=state["i"])
        clip_grad_norm(grads.flat, 5.0)
        opt.step(params.flat, grads.flat, 2e-3)

    def infer_step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        kernels.loss(params, x, y, kernels.state_last)

    for _ in range(3):
        train_step()
    train = windows_rate(train_step, batch * seq, windows, window_seconds)
    result = {"train": train[0], "train_windows": train[1]}
    if infer:
        for _ in range(3):
            infer_step()
        inf = windows_rate(infer_step, batch * seq, windows, window_seconds)
        result.update(infer=inf[0], infer_windows=inf[1])
    return result


def torch_rate(cell, layers, hidden, batch, seq, threads, windows, window_seconds, mode):
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "_torch_peer.py"),
        "--cell",
        cell,
        "--layers",
        str(layers),
        "--hidden",
        str(hidden),
        "--batch",
        str(batch),
        "--seq",
        str(seq),
        "--vocab",
        str(VOCAB),
        "--threads",
        str(threads),
        "--windows",
        str(windows),
        "--window-seconds",
        str(window_seconds),
        "--mode",
        mode,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "torch failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_available():
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


FIRST_STEP_SCRIPT = r"""
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np
from charrnn.kernels.window import Kernels
from charrnn.model.params import init_params
from charrnn.training.optim import Optimizer, clip_grad_norm
from charrnn.model.spec import ModelSpec
imported = time.perf_counter()
rng = np.random.default_rng(0)
spec = ModelSpec({cell!r}, {layers}, 128, 65)
p = init_params(spec, rng)
g = p.zeros_like()
k = Kernels(spec, 32, 64, np.float32, threads={threads})
opt = Optimizer("adam", p.flat.size)
x = rng.integers(0, 65, (32, 64)).astype(np.int32)
k.loss_and_grad(p, x, x, k.state_last, g)
clip_grad_norm(g.flat, 5.0)
opt.step(p.flat, g.flat, 2e-3)
stepped = time.perf_counter()
kv = Kernels(spec, 1, 64, np.float32)
kv.loss(p, x[:1], x[:1], kv.state_last)
validated = time.perf_counter()
print(json.dumps({{"import": imported - start, "first_step": stepped - imported,
                  "first_validation": validated - stepped, "total": validated - start}}))
"""


def first_step_times(threads, cell="rnn", layers=1):
    """Seconds to import and run the first training step in a fresh process, cold and warm."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="charrnn-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        script = FIRST_STEP_SCRIPT.format(root=str(ROOT), threads=threads, cell=cell, layers=layers)
        for which in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            out[which] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def measure(args, cell, s, load, rates, torch_version):
    """Ours (and PyTorch's) figures for one cell and shape, printed as a line as they come."""
    h, b, t = SHAPES[s]
    if args.wait_quiet and load == 0:
        wait_quiet(args.wait_quiet)
    with LoadMeter() as meter:
        r = ours_rates(
            cell,
            args.layers,
            h,
            b,
            t,
            args.threads,
            args.windows,
            args.window_seconds,
            infer=(load == 0 and not args.no_infer),
            dropout=args.dropout,
        )
    r["other_load_ours"] = meter.other_load
    if torch_version:
        if args.wait_quiet and load == 0:
            wait_quiet(args.wait_quiet)
        with LoadMeter() as meter:
            r["torch_train"] = torch_rate(
                cell, args.layers, h, b, t, args.threads, args.windows, args.window_seconds, "train"
            )["chars_per_s"]
            if load == 0 and not args.no_infer:
                r["torch_infer"] = torch_rate(
                    cell, args.layers, h, b, t, args.threads, args.windows, args.window_seconds, "infer"
                )["chars_per_s"]
        r["other_load_torch"] = meter.other_load
    fpc = flops_per_char(h, cell, args.layers)
    r["gflops"] = r["train"] * fpc / 1e9
    r["frac_512"] = r["train"] * fpc / (rates["512x512x512"] * 1e9)
    r["frac_step"] = r["train"] * fpc / (rates[f"{b}x{h}x{h}"] * 1e9)
    line = (
        f"{cell} x{args.layers} load={load} H={h} B={b} T={t}: ours {fmt_rate(r['train'])} "
        f"chars/s, {r['gflops']:.0f} GFLOP/s "
        f"(windows {', '.join(fmt_rate(x) for x in r['train_windows'])})"
    )
    if "torch_train" in r:
        line += f", torch {fmt_rate(r['torch_train'])}, ratio {r['train'] / r['torch_train']:.2f}"
    if "infer" in r:
        line += f"; inference ours {fmt_rate(r['infer'])}"
        if "torch_infer" in r:
            line += f", torch {fmt_rate(r['torch_infer'])}"
    line += f" [other load: ours {r['other_load_ours']:.0%}"
    if "other_load_torch" in r:
        line += f", torch {r['other_load_torch']:.0%}"
    print(line + "]", flush=True)
    return r


# -- report -------------------------------------------------------------------------------------


def fmt_rate(x):
    if x is None:
        return "-"
    return f"{x / 1000:.0f}k" if x >= 10000 else f"{x / 1000:.1f}k"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", default=",".join(SHAPES), help=f"comma-separated shapes among {', '.join(SHAPES)} (default: all)"
    )
    ap.add_argument("--cell", default="rnn", help=f"comma-separated cells among {', '.join(CELLS)} (default: rnn)")
    ap.add_argument("--layers", type=int, default=1, help="layers of every model (default 1)")
    ap.add_argument(
        "--dropout", type=float, default=0.0, help="dropout of our kernels (PyTorch's peer runs without; default 0)"
    )
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per figure (median)")
    ap.add_argument("--window-seconds", type=float, default=5.0, help="length of a timed window")
    ap.add_argument("--loads", default="0,1", help="numbers of busy processes to train beside, e.g. 0,1 (default)")
    ap.add_argument(
        "--quick", action="store_true", help="1 window of 1.5 s per figure, shapes 128 and 512, no busy run"
    )
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    ap.add_argument("--no-first-step", action="store_true", help="skip the cold/warm first step")
    ap.add_argument("--no-infer", action="store_true", help="skip inference throughput")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="wait up to this many seconds for idle cores before each measurement",
    )
    ap.add_argument("--json", help="also write the results to this JSON file")
    add_isa_argument(ap)
    args = ap.parse_args()
    if args.quick:
        args.windows, args.window_seconds, args.loads = 1, 1.5, "0"
        if args.sizes == ",".join(SHAPES):
            args.sizes = "128,512"
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SHAPES:
            ap.error(f"unknown size {s!r}; choose among {', '.join(SHAPES)}")
    loads = [int(x) for x in args.loads.split(",")]
    cells = [c.strip() for c in args.cell.split(",") if c.strip()]
    for c in cells:
        if c not in CELLS:
            ap.error(f"unknown cell {c!r}; choose among {', '.join(CELLS)}")
    if args.layers < 1:
        ap.error("--layers must be at least 1")

    import numba

    torch_version = None if args.no_torch else torch_available()
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch_version,
        "blas": BLAS_BACKEND,
        "threads": args.threads,
        "cells": cells,
        "layers": args.layers,
        "dropout": args.dropout,
        "isa": describe(ISA),
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
    }
    print(
        f"# {info['date']}  {info['cpu']}, {info['cores']} cores; numpy {info['numpy']}, "
        f"numba {info['numba']}, torch {torch_version or 'not installed'}; threads={args.threads}; "
        f"cells {','.join(cells)}, {args.layers} layer(s), dropout {args.dropout}; "
        f"{info['isa']}",
        flush=True,
    )
    info["busy_at_start"] = busy_fraction(1.0)
    print(f"# other load at start: {info['busy_at_start']:.0%} of the cores busy", flush=True)

    # Matmul rates of this machine (numpy, float32, its default BLAS threads).
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    rates = {"512x512x512": matmul_rate(512, 512, 512)}
    for s in sizes:
        h, b, _ = SHAPES[s]
        rates.setdefault(f"{b}x{h}x{h}", matmul_rate(b, h, h))
    info["matmul_gflops"] = rates
    print("# numpy float32 matmul GFLOP/s: " + ", ".join(f"{k}: {v:.0f}" for k, v in rates.items()), flush=True)

    results = {}
    for load in loads:
        with BusyProcesses(load):
            for cell in cells:
                for s in sizes:
                    results[f"{cell}/{s}/load{load}"] = measure(args, cell, s, load, rates, torch_version)

    first = None if args.no_first_step else first_step_times(args.threads, cells[0], args.layers)
    info["first_step"] = first

    # The markdown table.
    print()
    print(f"Command: `{info['command']}`  ")
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores; {info['date']}; numpy {info['numpy']}, "
        f"numba {info['numba']}, PyTorch {torch_version or '-'}; {args.threads} threads both sides; "
        f"other load at start {info['busy_at_start']:.0%}; {info['isa']}.  "
    )
    print("numpy float32 matmul: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    print()
    print(
        "| cell, layers | shape (V=65) | busy procs | ours train chars/s | PyTorch | ratio (target) "
        "| GFLOP/s | of rnn's | of 512² rate | of step rate | ours infer | PyTorch infer | ratio "
        "| other load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        cell, s, load = key.split("/")
        load = load[len("load") :]
        h, b, t = SHAPES[s]
        target = TARGETS[cell][s]
        ratio = f"{r['train'] / r['torch_train']:.2f}x ({target}x)" if "torch_train" in r else "-"
        iratio = f"{r['infer'] / r['torch_infer']:.2f}x" if "torch_infer" in r else "-"
        rnn_key = f"rnn/{s}/load{load}"
        of_rnn = f"{r['gflops'] / results[rnn_key]['gflops']:.0%}" if rnn_key in results else "-"
        other = f"{r['other_load_ours']:.0%}"
        if "other_load_torch" in r:
            other += f" / {r['other_load_torch']:.0%}"
        print(
            f"| {cell}, {args.layers} | H={h} B={b} T={t} | {load} | {fmt_rate(r['train'])} "
            f"| {fmt_rate(r.get('torch_train'))} | {ratio} | {r['gflops']:.0f} | {of_rnn} "
            f"| {r['frac_512']:.0%} | {r['frac_step']:.0%} | {fmt_rate(r.get('infer'))} "
            f"| {fmt_rate(r.get('torch_infer'))} | {iratio} | {other} |"
        )
    print()
    print(
        "other load: share of the cores used by other processes while ours / PyTorch ran "
        "(includes the busy processes we start)."
    )
    if first:
        print()
        print(
            f"First training step in a fresh process ({cells[0]}, {args.layers} layer(s), H=128; "
            "import + first step + first validation call):"
        )
        for which in ("cold", "warm"):
            f = first[which]
            print(
                f"- {which} Numba cache: import {f['import']:.2f} s, first step "
                f"{f['first_step']:.2f} s, first validation {f['first_validation']:.2f} s, "
                f"total {f['total']:.2f} s"
            )
    info["busy_at_end"] = busy_fraction(1.0)
    print(f"\n# other load at end: {info['busy_at_end']:.0%} of the cores busy (ours idle)")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
