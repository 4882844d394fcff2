"""Memory and speed of the text pipeline on a large corpus (run by hand; not a test).

    python bench/bench_text.py [--mb 100] [--source ../shared/corpora/tinyshakespeare.txt]

Builds a corpus of about --mb megabytes by repeating the source text (an ASCII one, and a copy
with non-ASCII punctuation so the general decoding path runs too), then measures, each in a
fresh process: load_corpus (read + decode + vocabulary + ids) time and throughput, and the peak
RSS of `charrnn train` running a few steps on it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_corpus(source: Path, megabytes: int, path: Path, non_ascii: bool) -> int:
    text = source.read_text(encoding="utf-8")
    if non_ascii:
        text = text.replace("--", "\u2014").replace("'", "\u2019")
    block = text.encode("utf-8")
    repeats = max(1, megabytes * 1_000_000 // len(block))
    with open(path, "wb") as f:
        for _ in range(repeats):
            f.write(block)
    return path.stat().st_size


def encode_in_child(path: Path) -> dict:
    code = (
        "import json, resource, time, sys\n"
        "from charrnn.corpus.text import load_corpus\n"
        "t = time.perf_counter(); vocab, ids = load_corpus(sys.argv[1]); t = time.perf_counter() - t\n"
        "print(json.dumps({'seconds': t, 'vocab': len(vocab), 'dtype': str(ids.dtype),"
        " 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout)


def train_peak_rss(path: Path, out_dir: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(path),
            "--out",
            str(out_dir),
            "--steps",
            "20",
            "--eval-every",
            "1000000",
            "--val-frac",
            "0.001",
            "--force",
        ],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/corpora/tinyshakespeare.txt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, non_ascii in (("ASCII", False), ("UTF-8 with non-ASCII", True)):
            path = tmp / f"big-{int(non_ascii)}.txt"
            size = make_corpus(args.source, args.mb, path, non_ascii)
            enc = encode_in_child(path)
            rss = train_peak_rss(path, tmp / "model")
            print(
                f"| {label} | {size / 1e6:.1f} MB | {enc['seconds']:.2f} s | "
                f"{size / 1e6 / enc['seconds']:.0f} MB/s | {enc['vocab']} ({enc['dtype']}) | "
                f"{enc['peak_rss_mb']:.0f} MiB | {rss:.0f} MiB ({rss * 2**20 / size:.2f}x the file) |"
            )
            path.unlink()


if __name__ == "__main__":
    main()
