"""Timing shared by the benchmarks (ours and the PyTorch peer, which runs in its own process)."""

import statistics
import time


def windows_rate(step, chars_per_step, windows, window_seconds):
    """Median chars/s over `windows` timed windows of at least `window_seconds` each, and all of them."""
    rates = []
    for _ in range(windows):
        n, start = 0, time.perf_counter()
        while True:
            step()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= window_seconds:
                break
        rates.append(n * chars_per_step / elapsed)
    return statistics.median(rates), rates
