"""Validation and `charrnn eval`: the exact number's speed, and the training estimate's speed and error.

    python bench/bench_eval.py [--model shakespeare-lstm] [--text tinyshakespeare.txt] [--val-frac 0.1]

Scores the last --val-frac of the text (the held-out part of a `--val-frac` run) with the model:
exactly (charrnn.training.evaluate.exact_bpc: one state carried, the sampler's two-thread scoring
pass, what `charrnn eval` prints and meta.json records) and by the estimate training validates with
(estimate_bpc: 32 pieces side by side, each warmed up), and with the batch-1 window kernels that
validation used before 0.4 (for scale). Prints chars/s of each, the numbers, and what a 10-minute
run's validations would cost at the default --eval-every. Also prints the machine's other load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from charrnn.model.checkpoint import load  # noqa: E402
from charrnn.training.evaluate import encode_for_model, estimate_bpc, estimate_kernels, exact_bpc  # noqa: E402

LN2 = np.log(2.0)


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def window_kernels_bpc(model, ids, chunk=256):
    """The batch-1 window forward validation used before (charrnn 0.3), for scale."""
    from charrnn.kernels.window import Kernels

    kernels = Kernels(model.spec, 1, chunk, np.float32, threads=1)
    state = np.zeros(model.spec.state_shape(1), dtype=np.float32)
    total = 0.0
    for start in range(0, len(ids) - 1, chunk):
        segment = ids[start : start + chunk + 1].astype(np.int32)
        total += kernels.loss(model.params, segment[None, :-1], segment[None, 1:], state) * (segment.size - 1)
        state[...] = kernels.state_last
    return total / (len(ids) - 1) / LN2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare-lstm")
    parser.add_argument("--text", default=str(REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"))
    parser.add_argument("--val-frac", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-window", action="store_true", help="leave out the slow batch-1 window pass")
    args = parser.parse_args()
    model = load(args.model)
    text = Path(args.text).read_text(encoding="utf-8")
    held_out = Path("/tmp") / f"bench-eval-{os.getpid()}.txt"
    held_out.write_text(text[len(text) - int(len(text) * args.val_frac) :], encoding="utf-8")
    ids, _ = encode_for_model(held_out, model.vocab)
    held_out.unlink()
    n = len(ids)
    print(
        f"model {args.model} ({model.spec.describe()}), {n:,} held-out characters, "
        f"load average {os.getloadavg()[0]:.2f}, NUMBA_CPU_NAME={os.environ.get('NUMBA_CPU_NAME', 'host')}"
    )
    exact_bpc(model.params, model.vocab, ids[:300])  # compile or load, untimed
    kernels = estimate_kernels(model.spec, args.threads)
    estimate_bpc(kernels, model.params, ids[:20_000])
    exact, exact_s = timed(lambda: exact_bpc(model.params, model.vocab, ids))
    estimate, estimate_s = timed(lambda: estimate_bpc(kernels, model.params, ids))
    print("| pass | bpc | seconds | chars/s |\n|---|---|---|---|")
    print(f"| exact (sampler scoring pass, batch 1) | {exact:.5f} | {exact_s:.1f} | {n / exact_s:,.0f} |")
    print(
        f"| estimate (32 pieces, warm-up 256) | {estimate:.5f} ({estimate - exact:+.5f}) | {estimate_s:.1f} | "
        f"{n / estimate_s:,.0f} |"
    )
    if not args.skip_window:
        window, window_s = timed(lambda: window_kernels_bpc(model, ids))
        print(f"| before: window kernels, batch 1 | {window:.5f} | {window_s:.1f} | {n / window_s:,.0f} |")
    print(
        f"A 10-minute run validating every 1,000 steps makes about 2 estimates and one exact pass: "
        f"{2 * estimate_s + exact_s:.0f} s, of which {2 * estimate_s:.0f} s within the budget "
        f"({2 * estimate_s / 600:.1%})."
    )


if __name__ == "__main__":
    main()
