"""The server's generation engine: one worker thread per model (charrnn.serve.worker, where the
streams of every request on that model are stepped together as one batch), made when the model is
first used, and the caps on the streams running at once, over all clients and per client.

Nothing here knows about HTTP or asyncio: a job (charrnn.serve.jobs) reports through its sink.
"""

from __future__ import annotations

import threading

from charrnn.serve.jobs import EngineBusy, EngineClosed, Job
from charrnn.serve.worker import TARGET_TICK_SECONDS, ModelWorker


class Engine:
    """One ModelWorker per model, made when the model is first used, and a cap on the streams
    running at once over all models (a request for `num` samples takes `num` of them), and on
    the streams of any one client (`max_per_client`; None: no share)."""

    def __init__(
        self,
        samplers: dict,
        *,
        max_streams: int = 64,
        max_per_client: int | None = None,
        target_tick: float = TARGET_TICK_SECONDS,
        tick_chars: int | None = None,
    ):
        self._samplers = dict(samplers)
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._by_client: dict[str, int] = {}
        self._target_tick = target_tick
        self._tick_chars = tick_chars
        self._workers: dict[str, ModelWorker] = {}
        self._lock = threading.Lock()
        self._streams = 0
        self._closed = False

    @property
    def streams(self) -> int:
        """Streams admitted and not yet ended (a cancelled job's end at the worker's next tick)."""
        return self._streams

    def workers(self) -> dict[str, ModelWorker]:
        with self._lock:
            return dict(self._workers)

    def _worker(self, name: str) -> ModelWorker:
        worker = self._workers.get(name)
        if worker is None:
            worker = self._workers[name] = ModelWorker(
                self._samplers[name], name, target_tick=self._target_tick, tick_chars=self._tick_chars
            )
        return worker

    def client_streams(self, client: str) -> int:
        with self._lock:
            return self._by_client.get(client, 0)

    def submit(self, name: str, job: Job, client: str | None = None) -> None:
        """Queue `job` on model `name`'s worker: EngineBusy if it would pass the stream cap or
        `client`'s share of it, EngineClosed once the engine is stopping. The slots come back
        when the job ends."""
        with self._lock:
            if self._closed:
                raise EngineClosed("the server is shutting down")
            if self._streams + job.num > self.max_streams:
                raise EngineBusy(
                    f"the server is already generating {self._streams} samples at "
                    f"once and its limit is {self.max_streams}; try again shortly"
                )
            mine = self._by_client.get(client, 0) if client is not None else 0
            if client is not None and self.max_per_client is not None and mine + job.num > self.max_per_client:
                raise EngineBusy(
                    f"this client is already generating {mine} samples at once and "
                    f"each client's share is {self.max_per_client}; try again shortly"
                )
            worker = self._worker(name)
            self._streams += job.num
            if client is not None:
                self._by_client[client] = mine + job.num
        released = threading.Lock()

        def on_done():
            if released.acquire(blocking=False):  # once, whoever ends the job
                with self._lock:
                    self._streams -= job.num
                    if client is not None:
                        left = self._by_client.get(client, 0) - job.num
                        if left > 0:
                            self._by_client[client] = left
                        else:
                            self._by_client.pop(client, None)

        job.on_done = on_done
        try:
            worker.submit(job)
        except EngineClosed:
            on_done()
            raise

    def close(self) -> None:
        """End every job with EngineClosed and refuse new ones. Called at shutdown before the
        connections close, so that a streaming client gets its final event at once."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.close()
