"""How much `charrnn serve` gains from generating concurrent requests as one batch.

    python bench/bench_serve.py                 # from the repository root; about a minute

On a random one-layer vanilla RNN with H=512 and 65 characters (the issue's setting; --hidden for
another size), measures:
  1. the engine alone (charrnn.serve.engine, no HTTP): aggregate characters per second of 1, 4, 16
     and 32 streams generating at once, each with its own seed; the 16/1 ratio is the issue's
     target (>= 5x); and BatchSampler.draw alone over 1 and 16 rows, the ceiling the engine
     works under;
  2. the tick size k (characters per BatchSampler.draw call) for 16 streams: fixed k of 1, 4, 16,
     64, 256, and the adaptive k the server uses: chars/s, and how long a tick lasts (the most a
     new request waits to join, or a cancelled one keeps generating);
  3. end to end over HTTP: a real server (uvicorn, loopback port) with 1 and 16 clients streaming
     at once (text/event-stream): aggregate characters per second the clients receive.
Prints a Markdown table, with the load average before and after: figures from a busy machine
(another job on the cores) are low and uneven, and the table says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_model(directory: Path, hidden: int, vocab_size: int = 65):
    from charrnn.model.checkpoint import save_model
    from charrnn.model.params import init_params
    from charrnn.model.spec import ModelSpec
    from charrnn.model.vocab import Vocab

    vocab = Vocab(tuple(chr(c) for c in range(32, 32 + vocab_size)))
    params = init_params(ModelSpec("rnn", 1, hidden, vocab_size), np.random.default_rng(0))
    save_model(directory, params, vocab, {"best_val_bpc": None})
    return directory


def engine_rate(sampler, streams: int, seconds: float, tick_chars=None) -> tuple[float, float]:
    """Aggregate chars/s of `streams` jobs of long length run for about `seconds`, and the mean
    tick duration (s)."""
    from charrnn.serve.engine import Engine
    from charrnn.serve.jobs import make_job

    engine = Engine({"m": sampler}, max_streams=streams, tick_chars=tick_chars)
    jobs = []
    for i in range(streams):
        job = make_job(np.zeros(0, dtype=np.int64), 10**6, 1, seed=i, sink=lambda item: None)
        engine.submit("m", job)
        jobs.append(job)
    worker = engine.workers()["m"]
    time.sleep(min(0.5, seconds / 4))  # let k settle
    chars0, ticks0, t0 = worker.chars_drawn, worker.ticks, time.perf_counter()
    time.sleep(seconds)
    chars1, ticks1, t1 = worker.chars_drawn, worker.ticks, time.perf_counter()
    for job in jobs:
        job.cancel()
    engine.close()
    ticks = max(1, ticks1 - ticks0)
    return (chars1 - chars0) / (t1 - t0), (t1 - t0) / ticks


def kernel_rate(sampler, streams: int, k: int, seconds: float) -> float:
    """chars/s of BatchSampler.draw alone over `streams` rows, k characters a call: what the
    engine's figures are to be compared with (the engine's own cost is the difference)."""
    states = sampler.new_states(streams)
    options = (np.ones(streams), np.zeros(streams, dtype=np.int64), np.ones(streams), np.zeros(streams, dtype=np.bool_))
    uniforms = np.random.default_rng(0).random((streams, k))
    out = np.empty((streams, k), dtype=np.int64)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.draw(states, uniforms, *options, out)
        calls += 1
    return calls * streams * k / (time.perf_counter() - start)


def http_rate(directory: Path, clients: int, length: int) -> float:
    """Aggregate chars/s that `clients` streaming clients receive from a real server."""
    import http.client
    import socket

    import uvicorn

    from charrnn.serve.app import create_app
    from charrnn.serve.checks import Limits
    from charrnn.serve.models import load_served

    app = create_app([load_served("m", directory)], Limits(max_length=length, max_streams=max(64, clients)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    received = [0] * clients

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request(
            "POST",
            "/api/generate",
            json.dumps({"model": "m", "length": length, "seed": i, "stream": True}),
            {"Content-Type": "application/json"},
        )
        text = conn.getresponse().read().decode()
        for block in text.split("\n\n"):
            if block.startswith("data:"):
                received[i] += len(json.loads(block[5:]).get("text", ""))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    server.should_exit = True
    thread.join(10)
    sock.close()
    assert received == [length] * clients, received
    return sum(received) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=3.0, help="per engine measurement")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many (engine)")
    args = parser.parse_args()

    from charrnn.serve.models import load_served

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        directory = make_model(Path(tmp) / "m", args.hidden)
        sampler = load_served("m", directory).sampler  # kernels compiled here
        engine_rate(sampler, 16, 0.5)  # warm

        def median_rate(streams, tick_chars=None):
            runs = [engine_rate(sampler, streams, args.seconds, tick_chars) for _ in range(args.repeats)]
            return statistics.median(r for r, _ in runs), statistics.median(t for _, t in runs)

        rows = []
        print(
            f"# bench_serve: vanilla RNN H={args.hidden}, 65 characters, "
            f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        print("\n## 1. Engine: streams generated together\n")
        print("| streams | chars/s (all streams) | x one stream | tick (ms) |")
        print("|---:|---:|---:|---:|")
        one = None
        for streams in (1, 4, 16, 32):
            rate, tick = median_rate(streams)
            one = one or rate
            rows.append((streams, rate))
            print(f"| {streams} | {rate:,.0f} | {rate / one:.1f}x | {tick * 1000:.1f} |", flush=True)

        kernel_rates = {
            n: statistics.median(kernel_rate(sampler, n, 64, args.seconds / 2) for _ in range(args.repeats))
            for n in (1, 16)
        }
        print(
            "\nThe kernel alone (BatchSampler.draw, 64 characters a call, no engine): "
            + ", ".join(f"{n} rows {rate:,.0f} chars/s" for n, rate in kernel_rates.items())
            + ".",
            flush=True,
        )

        print("\n## 2. Tick size, 16 streams\n")
        print("| k (chars per tick) | chars/s | tick (ms) |")
        print("|---:|---:|---:|")
        for k in (1, 4, 16, 64, 256, None):
            rate, tick = median_rate(16, k)
            print(f"| {k or 'adaptive (server)'} | {rate:,.0f} | {tick * 1000:.1f} |", flush=True)

        print("\n## 3. HTTP, streaming clients (real server on a loopback port)\n")
        print("| clients | chars/s received (all clients) | x one client |")
        print("|---:|---:|---:|")
        base = None
        for clients in (1, 16):
            rate = http_rate(directory, clients, length=max(2000, int(one * args.seconds / 2)))
            base = base or rate
            print(f"| {clients} | {rate:,.0f} | {rate / base:.1f}x |", flush=True)
    load_after = os.getloadavg()
    busy = load_before[0] > 0.5
    print(
        f"\nLoad average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"(the bench itself adds up to about 2)"
        + (
            ": the machine was busy with other work before it started, so these figures are low and uneven."
            if busy
            else "."
        )
    )


if __name__ == "__main__":
    main()
