"""Batched generation for one model: a worker thread steps every stream together.

A request for `num` samples becomes a Job (charrnn.serve.jobs) of `num` streams. Each stream is
one row of the worker's state array (n, L, K, H) and carries its own uniforms, options and
position; every tick the worker calls `BatchSampler.draw` once over all active rows for `k`
characters, hands each job its new text, and lets streams join (after reading their prime) and
leave (finished or cancelled) between ticks. A row's characters do not depend on which other rows
share its batch (BatchSampler's guarantee), so a request's text is exactly what it would be alone.

`k` adapts so that a tick lasts about TARGET_TICK_SECONDS: short enough that a new request joins,
and a cancelled one leaves, within a few tens of milliseconds; long enough that the per-tick
Python work (options, decoding, delivery) stays small beside the kernel
(bench/bench_serve.py measures both).

A failure belongs to one job: a job whose options cannot be admitted, whose prime cannot be read or
whose text cannot be decoded ends alone with GenerationFailed (a generic message; the detail goes
to the log "charrnn.serve"); if a tick's shared draw fails, the tick is run again job by job from
the states before it, so that only the jobs that fail alone end and the others' text is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque

import numpy as np

from charrnn.serve.jobs import EngineClosed, GenerationFailed, Job, deliver

TARGET_TICK_SECONDS = 0.02
MIN_TICK_CHARS = 4
MAX_TICK_CHARS = 1024  # a lone 512-unit vanilla stream: 8 ms
FIRST_TICK_CHARS = 16


log = logging.getLogger("charrnn.serve")


class _Stream:
    """One sample of a job: a row of the worker's arrays."""

    __slots__ = ("job", "index", "done", "rng")

    def __init__(self, job: Job, index: int):
        self.job = job
        self.index = index
        self.done = 0
        self.rng = job.uniforms_of(index)


class ModelWorker:
    """The thread that generates for one model. `submit` may be called from any thread."""

    def __init__(
        self, sampler, name: str = "model", *, target_tick: float = TARGET_TICK_SECONDS, tick_chars: int | None = None
    ):
        self.sampler = sampler
        self.name = name
        self._target_tick = target_tick
        self._fixed_k = tick_chars  # None: adapt k to the target tick
        self._k = tick_chars or FIRST_TICK_CHARS
        self._wake = threading.Condition()
        self._pending: deque[Job] = deque()
        self._closing = False
        self._streams: list[_Stream] = []  # row i of the arrays below is _streams[i]
        self._capacity = 0
        self._states = sampler.new_states(0)  # (capacity, L, K, H)
        self._inv_t = np.empty(0)  # (capacity,) float64
        self._top_k = np.empty(0, dtype=np.int64)
        self._top_p = np.empty(0)
        self._greedy = np.empty(0, dtype=np.bool_)
        # Counters, read by tests and the bench (a stale read is harmless).
        self.ticks = 0
        self.chars_drawn = 0
        self.active_rows = 0
        self._thread = threading.Thread(target=self._run, name=f"charrnn-serve-{name}", daemon=True)
        self._thread.start()

    # -- any thread -----------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            self._pending.append(job)
            self._wake.notify()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the thread; running and waiting jobs end with EngineClosed."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    @property
    def busy(self) -> bool:
        return bool(self._streams or self._pending)

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._pending and not self._streams:
                    self._wake.wait()
                if self._closing:
                    break
                joining = list(self._pending)
                self._pending.clear()
            for job in joining:
                self._admit_alone(job)
            try:
                self._drop_cancelled()
                if self._streams:
                    self._tick()
            except Exception:  # noqa: BLE001 - a bug outside any one job: end the jobs, never hang them
                log.exception("model %s: generation failed for every running job", self.name)
                for job in {id(s.job): s.job for s in self._streams}.values():
                    self._end(job, GenerationFailed())
                self._streams.clear()
                self.active_rows = 0
        stopped = EngineClosed("the server is shutting down")
        for job in {id(s.job): s.job for s in self._streams}.values():
            self._end(job, stopped)
        for job in self._pending:
            self._end(job, stopped)
        self._streams.clear()
        self.active_rows = 0

    def _end(self, job: Job, outcome=None) -> None:
        """The job is over: its sink gets `outcome` (None: complete) unless it was cancelled."""
        if job.finished:
            return
        job.finished = True
        if job.on_done is not None:  # first, so the slots are free when the client hears
            with contextlib.suppress(Exception):  # never let a callback stop the worker
                job.on_done()
        if not job.cancelled:
            deliver(job, outcome)

    def _grow(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        capacity = max(needed, 2 * self._capacity, 8)
        n = len(self._streams)
        states = self.sampler.new_states(capacity)
        states[:n] = self._states[:n]
        self._states = states
        for name, dtype in (
            ("_inv_t", np.float64),
            ("_top_k", np.int64),
            ("_top_p", np.float64),
            ("_greedy", np.bool_),
        ):
            grown = np.zeros(capacity, dtype=dtype)
            grown[:n] = getattr(self, name)[:n]
            setattr(self, name, grown)
        self._capacity = capacity

    def _admit_alone(self, job: Job) -> None:
        """Admit `job`; if that fails, it ends alone (its rows, if any were added, go again)."""
        rows = len(self._streams)
        try:
            self._admit(job)
        except Exception:  # noqa: BLE001 - this job's failure is its own
            log.exception("model %s: a job could not start", self.name)
            del self._streams[rows:]
            self.active_rows = len(self._streams)
            self._end(job, GenerationFailed())

    def _admit(self, job: Job) -> None:
        if job.cancelled:
            self._end(job)
            return
        if job.length == 0:
            self._end(job)
            return
        first = len(self._streams)
        self._grow(first + job.num)
        rows = slice(first, first + job.num)
        self._states[first] = 0.0
        # Every option into its row first: a value the arrays cannot hold fails here, on this job.
        self._inv_t[rows] = job.inv_temperature
        self._top_k[rows] = job.top_k
        self._top_p[rows] = job.top_p
        self._greedy[rows] = job.greedy
        self.sampler.read(self._states, first, job.prime_ids)
        self._states[first + 1 : first + job.num] = self._states[first]
        self._streams.extend(_Stream(job, i) for i in range(job.num))
        job._left = job.num
        self.active_rows = len(self._streams)

    def _remove_rows(self, doomed: set[int]) -> None:
        """Drop rows by index: each hole takes the last row (states and options move with it)."""
        for row in sorted(doomed, reverse=True):
            last = len(self._streams) - 1
            if row != last:
                self._states[row] = self._states[last]
                for array in (self._inv_t, self._top_k, self._top_p, self._greedy):
                    array[row] = array[last]
                self._streams[row] = self._streams[last]
            self._streams.pop()
        self.active_rows = len(self._streams)

    def _drop_cancelled(self) -> None:
        doomed = {row for row, stream in enumerate(self._streams) if stream.job.cancelled}
        for row in doomed:
            self._end(self._streams[row].job)
        if doomed:
            self._remove_rows(doomed)

    def _tick(self) -> None:
        n = len(self._streams)
        k = self._k
        uniforms = np.zeros((n, k), dtype=np.float64)  # (n, k)
        counts = np.empty(n, dtype=np.int64)  # characters kept per row
        for row, stream in enumerate(self._streams):
            m = min(k, stream.job.length - stream.done)
            counts[row] = m
            if stream.rng is not None:
                uniforms[row, :m] = stream.rng.random(m)
        out = np.empty((n, k), dtype=np.int64)  # (n, k)
        before = self._states[:n].copy()  # (n, L, K, H)
        started = time.perf_counter()
        try:
            self._draw(slice(0, n), uniforms, out)
            failed = set()
        except Exception:  # noqa: BLE001 - find the jobs that fail alone; the others go on
            log.exception("model %s: a tick of %d streams failed; running it job by job", self.name, n)
            self._states[:n] = before
            failed = self._draw_job_by_job(uniforms, out)
        elapsed = time.perf_counter() - started
        self.ticks += 1
        self.chars_drawn += int(counts.sum())
        if self._fixed_k is None and elapsed > 0 and not failed:
            wanted = int(k * self._target_tick / elapsed)
            self._k = max(MIN_TICK_CHARS, min(MAX_TICK_CHARS, (self._k + wanted) // 2 or 1))
        self._hand_out(out, counts, failed)

    def _draw(self, rows, uniforms, out) -> None:
        """Draw for `rows` (a slice, or an index array whose rows are copied out and back)."""
        if isinstance(rows, slice):
            self.sampler.draw(
                self._states[rows],
                uniforms[rows],
                self._inv_t[rows],
                self._top_k[rows],
                self._top_p[rows],
                self._greedy[rows],
                out[rows],
            )
            return
        states, drawn = self._states[rows], out[rows]
        self.sampler.draw(
            states, uniforms[rows], self._inv_t[rows], self._top_k[rows], self._top_p[rows], self._greedy[rows], drawn
        )
        self._states[rows] = states
        out[rows] = drawn

    def _draw_job_by_job(self, uniforms, out) -> set[int]:
        """Each job's rows drawn on their own (a row's text does not depend on the others); the
        ids of the jobs that failed."""
        by_job: dict[int, list[int]] = {}
        for row, stream in enumerate(self._streams):
            by_job.setdefault(id(stream.job), []).append(row)
        failed = set()
        for key, rows in by_job.items():
            try:
                self._draw(np.array(rows, dtype=np.int64), uniforms, out)
            except Exception:  # noqa: BLE001 - this job's failure is its own
                log.exception("model %s: a job failed alone", self.name)
                failed.add(key)
        return failed

    def _hand_out(self, out, counts, failed: set[int]) -> None:
        """Decode and deliver each job's new text; end the jobs that are done or that failed."""
        pieces: dict[int, tuple[Job, list[str]]] = {}
        for row, stream in enumerate(self._streams):
            job = stream.job
            if id(job) in failed:
                continue
            m = int(counts[row])
            entry = pieces.get(id(job))
            if entry is None:
                entry = pieces[id(job)] = (job, [""] * job.num)
            try:
                entry[1][stream.index] = self.sampler.decode(out[row, :m])
            except Exception:  # noqa: BLE001 - e.g. a vocabulary the decoder cannot hold
                log.exception("model %s: a job's text could not be decoded", self.name)
                failed.add(id(job))
            stream.done += m
            job.generated += m
        done_rows = set()
        for row, stream in enumerate(self._streams):
            job = stream.job
            if id(job) in failed or stream.done >= job.length:
                done_rows.add(row)
                job._left -= 1
        for key, (job, texts) in pieces.items():
            if key not in failed and not job.cancelled:
                deliver(job, texts)
        for row in done_rows:
            job = self._streams[row].job
            if id(job) in failed:
                self._end(job, GenerationFailed())
            elif job._left == 0:
                self._end(job)
        if done_rows:
            self._remove_rows(done_rows)
