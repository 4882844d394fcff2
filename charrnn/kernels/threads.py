"""Batch chunks on threads: one contiguous chunk of the batch per thread, results in chunk order."""

from __future__ import annotations

import os
import threading


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, on Linux), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class ChunkThreads:
    """`n_threads` threads (the caller and n_threads - 1 workers) run task(w) for every chunk w,
    each taking the next chunk not yet taken. Which thread runs a chunk does not change its
    result, and the results are added in chunk order, so the sum is deterministic.

    The hand-offs are counters under one condition, not tokens: a KeyboardInterrupt can land
    between any two bytecodes of the caller, and `run` still returns or raises only once every
    worker is done (a worker still writing the shared buffers would corrupt the next call). A
    call costs about 20 microseconds of hand-offs, a third of what a thread pool's futures cost
    (it shows at H=128, where a whole step takes about 2 ms)."""

    def __init__(self, n_threads: int, n_chunks: int):
        self.n_threads, self.n_chunks = n_threads, n_chunks
        self._cond = threading.Condition()
        self._task = None
        self._generation = 0  # calls handed out so far
        self._completed = [0] * n_threads  # per worker: the last generation it finished
        self._next_chunk = 0
        self._claim = threading.Lock()
        self._results = [0.0] * n_chunks
        self._errors: list[BaseException] = []
        self._closed = False
        for w in range(1, n_threads):
            threading.Thread(target=self._serve, args=(w,), name=f"charrnn-kernels-{w}", daemon=True).start()

    def _work(self, task):
        while True:
            with self._claim:
                chunk = self._next_chunk
                self._next_chunk += 1
            if chunk >= self.n_chunks:
                return
            try:
                self._results[chunk] = task(chunk)
            except BaseException as exc:  # handed to the caller by run()
                self._errors.append(exc)
                return

    def _serve(self, w):
        seen = 0
        while True:
            with self._cond:
                while self._generation == seen and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                seen, task = self._generation, self._task
            self._work(task)
            with self._cond:
                self._completed[w] = seen
                self._cond.notify_all()

    def _all_done(self):
        return all(done == self._generation for done in self._completed[1:])

    def _wait_all_done(self):
        """Wait until every worker finished the current generation, through any interrupt;
        the first interrupt is re-raised afterwards."""
        interrupted = None
        while True:
            try:
                with self._cond:
                    while not self._all_done():
                        self._cond.wait()
                break
            except BaseException as exc:
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted

    def run(self, task) -> float:
        """The sum of task(w) over the chunks, added in chunk order."""
        self._wait_all_done()  # a call interrupted before it could wait
        self._errors.clear()
        self._next_chunk = 0
        with self._cond:
            self._task = task  # before the generation, which starts workers
            self._generation += 1
            self._cond.notify_all()
        try:
            self._work(task)
        finally:
            self._wait_all_done()
        if self._errors:
            raise self._errors[0]
        total = 0.0
        for value in self._results:
            total += value
        return total

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def chunk_bounds(batch_size: int, threads: int) -> list[int]:
    """Batch rows [bounds[w], bounds[w+1]) form chunk w: one chunk per thread. (Two chunks per
    thread, so that a thread slowed by another process leaves work to the other, measured no
    faster with one or two other busy processes, within +-8%, and needs more buffers.)"""
    n_chunks = min(threads, batch_size)
    return [w * batch_size // n_chunks for w in range(n_chunks + 1)]


class TeamThreads(ChunkThreads):
    """`n_threads` threads that run task(w), w = 0 (the caller) .. n_threads - 1, at the same
    time, each its own w: for kernels whose threads wait on each other inside compiled code
    (charrnn.kernels.sync), where a thread that took two tasks would wait for itself forever."""

    def __init__(self, n_threads: int):
        self._me = threading.local()  # before the workers start
        super().__init__(n_threads, n_threads)

    def _serve(self, w):
        self._me.w = w
        super()._serve(w)

    def _work(self, task):
        w = getattr(self._me, "w", 0)
        try:
            self._results[w] = task(w)
        except BaseException as exc:  # handed to the caller by run()
            self._errors.append(exc)
