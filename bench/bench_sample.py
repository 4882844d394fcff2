"""How fast `charrnn sample` writes: characters per second, and time to the first character.

    /work/venv/bin/python bench/bench_sample.py            # from the repository root

Measures, on random one-layer models saved with checkpoint.save_model (65 characters, like
tinyshakespeare), for each cell of --cells:
  1. characters per second of sampling.sample_text for H=512 and H=128: batch 1, temperature 1.0,
     20,000 characters, after compilation; the median of --repeats runs; and the aggregate rate
     of --batch streams generated together (sampling.iter_samples, as `charrnn sample --num`);
  2. the same loop in PyTorch, if it is importable: an nn.RNN / nn.LSTM / nn.GRU step per
     character and torch.multinomial, written two obvious ways (see torch_rates; default threads;
     torch is a benchmark-only dependency: pip install torch==2.13.0);
  3. wall time from starting `python -m charrnn sample MODEL --prime ROMEO: --no-prime-echo` to the
     first generated character on its stdout, as a real subprocess, with a warm Numba cache and
     with a cold one (NUMBA_CACHE_DIR pointing at a new empty directory).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))
from _isa import add_isa_argument, apply_isa, describe  # noqa: E402

ISA = apply_isa()  # before numba is imported: it may re-execute this script
from charrnn.model.checkpoint import save_model  # noqa: E402
from charrnn.model.params import init_params  # noqa: E402
from charrnn.model.spec import ModelSpec  # noqa: E402
from charrnn.model.vocab import Vocab  # noqa: E402
from charrnn.sampling import iter_samples, sample_text  # noqa: E402

# 65 characters, as many as tinyshakespeare has.
CHARS = tuple(sorted(set("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")))


def _busy_seconds() -> float:
    """CPU seconds spent busy on the whole machine since boot (Linux /proc/stat), or NaN."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How many cores other processes kept busy while this one measured (benchmarks on a shared
    machine are only as good as this number is small)."""

    def __enter__(self):
        self.start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc):
        wall, busy, own = self.start
        wall = time.perf_counter() - wall
        self.cores = max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own)) / wall


def wait_until_quiet(limit_seconds: float, threshold: float = 0.15) -> float:
    """Wait (up to `limit_seconds`) for a 5-second window in which other processes use fewer than
    `threshold` cores; returns the load seen in the last window."""
    deadline = time.monotonic() + limit_seconds
    while True:
        with OtherLoad() as load:
            time.sleep(5)
        if load.cores < threshold or time.monotonic() > deadline:
            return load.cores


def charrnn_rate(params, vocab, chars: int, repeats: int) -> float:
    sample_text(params, vocab, 100, rng=np.random.default_rng(0))  # compile or load the cache
    rates = []
    for seed in range(repeats):
        start = time.perf_counter()
        text = sample_text(params, vocab, chars, temperature=1.0, rng=np.random.default_rng(seed))
        rates.append(len(text) / (time.perf_counter() - start))
    return statistics.median(rates)


def batch_rate(params, vocab, chars: int, streams: int, repeats: int) -> float:
    """Aggregate chars/s of `streams` samples generated together as one batch."""

    def run(seed):
        for _ in iter_samples(params, vocab, chars, num=streams, rng=np.random.default_rng(seed)):
            pass

    run(0)
    rates = []
    for seed in range(repeats):
        start = time.perf_counter()
        run(seed)
        rates.append(streams * chars / (time.perf_counter() - start))
    return statistics.median(rates)


def torch_rates(params, vocab, chars: int, repeats: int) -> tuple[float, float]:
    """PyTorch chars/s written two obvious ways: (lean, tutorial).

    lean: under torch.no_grad(), the one-hot filled in place, int() of the draw;
    tutorial: F.one_hot(...).float() per character, autograd left on, .item() of the draw.
    The weights are ours, mapped as the README says (the same functions).
    """
    import torch
    import torch.nn.functional as F

    spec = params.spec
    vocab_size, hidden = spec.vocab_size, spec.hidden
    kind = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[spec.cell]
    rnn = kind(vocab_size, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, vocab_size)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(params["U.0"].T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(params["W.0"].T.copy()))
        rnn.bias_ih_l0.copy_(torch.from_numpy(params["b.0"]))
        rnn.bias_hh_l0.zero_()
        if spec.cell == "gru":
            rnn.bias_hh_l0[2 * hidden :] = torch.from_numpy(params["b_hn.0"])
        head.weight.copy_(torch.from_numpy(params.V.T.copy()))
        head.bias.copy_(torch.from_numpy(params.b_y))

    def zero_state():
        h = torch.zeros(1, 1, hidden)
        return (h, torch.zeros(1, 1, hidden)) if spec.cell == "lstm" else h

    def lean(n):
        generated = []
        with torch.no_grad():
            h = zero_state()
            char = 0
            for _ in range(n):
                x = torch.zeros(1, 1, vocab_size)
                x[0, 0, char] = 1.0
                out, h = rnn(x, h)
                probs = torch.softmax(head(out[0, 0]) / 1.0, dim=-1)
                char = int(torch.multinomial(probs, 1))
                generated.append(char)
        return generated

    def tutorial(n):
        generated = []
        h = zero_state()
        char = 0
        for _ in range(n):
            x = F.one_hot(torch.tensor([[char]]), vocab_size).float()
            out, h = rnn(x, h)
            probs = F.softmax(head(out[0, -1]) / 1.0, dim=-1)
            char = torch.multinomial(probs, 1).item()
            generated.append(char)
        return generated

    rates = []
    for loop in (lean, tutorial):
        loop(100)
        runs = []
        for seed in range(repeats):
            torch.manual_seed(seed)
            start = time.perf_counter()
            loop(chars)
            runs.append(chars / (time.perf_counter() - start))
        rates.append(statistics.median(runs))
    return rates[0], rates[1]


def first_char_seconds(model_dir: Path, cache_dir: Path, echo: bool = False) -> float:
    """Seconds from starting `charrnn sample` to the first byte on its stdout: the first generated
    character, or with `echo` the prime, which is printed before the kernels run."""
    env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_CACHE_DIR=str(cache_dir))
    command = [
        sys.executable,
        "-m",
        "charrnn",
        "sample",
        str(model_dir),
        "--prime",
        "ROMEO:",
        "--length",
        "200",
        "--seed",
        "1",
    ] + ([] if echo else ["--no-prime-echo"])
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    _, err = proc.communicate()
    if not first or proc.returncode != 0:
        raise SystemExit(f"charrnn sample failed: {err.decode(errors='replace').strip()}")
    return elapsed


def measure(args) -> None:
    vocab = Vocab(CHARS)
    try:
        import torch

        torch_note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch = None
        torch_note = "torch not importable"
    if args.no_torch:
        torch = None

    print(
        f"# bench_sample: {datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
        f"{torch_note}; {describe(ISA)}"
    )
    print(
        f"{args.chars} characters, temperature 1.0, batch 1, median of {args.repeats} runs "
        f"(PyTorch: of {max(1, args.repeats // 2)}); load average at start "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    print(
        f"| cell | H | charrnn chars/s | {args.batch} streams together, chars/s in all | "
        "PyTorch, lean loop | ratio | PyTorch, tutorial loop | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    params_512 = None
    for cell in args.cells.split(","):
        for hidden in (512, 128):
            spec = ModelSpec(cell, 1, hidden, len(vocab))
            params = init_params(spec, np.random.default_rng(hidden))
            if hidden == 512 and cell == "rnn":
                params_512 = params
            ours = charrnn_rate(params, vocab, args.chars, args.repeats)
            batched = batch_rate(params, vocab, args.chars // args.batch * 4, args.batch, max(1, args.repeats // 2))
            row = f"| {cell} | {hidden} | {ours:,.0f} | {batched:,.0f} ({batched / ours:.1f}x) |"
            if torch is not None:
                lean, tutorial = torch_rates(params, vocab, args.chars // 4, max(1, args.repeats // 2))
                print(
                    f"{row} {lean:,.0f} | {ours / lean:.1f}x | {tutorial:,.0f} | {ours / tutorial:.1f}x |", flush=True
                )
            else:
                print(f"{row} - | - | - | - |", flush=True)
    if params_512 is None:
        params_512 = init_params(ModelSpec("rnn", 1, 512, len(vocab)), np.random.default_rng(512))

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model512"
        save_model(model_dir, params_512, vocab, {"step": 0})
        warm_cache = Path(tmp) / "warm-cache"
        first_char_seconds(model_dir, warm_cache)  # fills the cache
        warm = [first_char_seconds(model_dir, warm_cache) for _ in range(args.repeats)]
        echoed = [first_char_seconds(model_dir, warm_cache, echo=True) for _ in range(args.repeats)]
        cold = [first_char_seconds(model_dir, Path(tmp) / f"cold-cache-{i}") for i in range(max(1, args.repeats // 2))]
        # The interpreter and imports alone, for scale.
        env = dict(os.environ, PYTHONPATH=str(REPO))
        imports = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", "import charrnn.cli, charrnn.sampling"], cwd=REPO, env=env, check=True
            )
            imports.append(time.perf_counter() - start)
    print("\n| `charrnn sample` (H=512) start to first generated character | seconds (median) |")
    print("|---|---|")
    print(f"| warm Numba cache | {statistics.median(warm):.2f} |")
    print(f"| cold Numba cache (compiles the kernels) | {statistics.median(cold):.2f} |")
    print(
        f"| warm, first character of the echoed prime (printed before sampling starts) | "
        f"{statistics.median(echoed):.2f} |"
    )
    print(f"| for scale: Python start + `import charrnn.cli, charrnn.sampling` | {statistics.median(imports):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated cells to measure")
    parser.add_argument("--batch", type=int, default=16, help="streams generated together")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for other processes to go idle",
    )
    add_isa_argument(parser)
    args = parser.parse_args()
    if args.wait_quiet:
        wait_until_quiet(args.wait_quiet)
    with OtherLoad() as other:
        measure(args)
    print(f"\nOther processes kept {other.cores:.2f} cores busy on average during this run.")


if __name__ == "__main__":
    main()
