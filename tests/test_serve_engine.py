"""The server's generation engine on its own: streams joining and leaving a batch between ticks
get exactly the text they would get alone."""

from __future__ import annotations

import queue
import random

import numpy as np
import pytest
from test_serve_support import make_tiny_models, wait_until

from charrnn.serve.engine import Engine
from charrnn.serve.jobs import EngineBusy, EngineClosed, make_job


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from charrnn.sampling import load

    dirs = make_tiny_models(tmp_path_factory.mktemp("engine-models"))
    return {name: load(directory) for name, directory in dirs.items()}


@pytest.fixture(scope="module")
def samplers(models):
    from charrnn.sampling import BatchSampler

    return {name: BatchSampler(model) for name, model in models.items()}


def collect(q: queue.Queue, num: int, timeout: float = 60):
    texts = [""] * num
    while True:
        item = q.get(timeout=timeout)
        if item is None:
            return texts
        if isinstance(item, BaseException):
            return item
        for i, piece in enumerate(item):
            texts[i] += piece


@pytest.mark.parametrize("tick_chars", [1, 3, None])
def test_streams_joining_and_leaving_get_their_text_alone(samplers, tick_chars):
    rng = random.Random(tick_chars or 0)
    engine = Engine(samplers, max_streams=100, tick_chars=tick_chars)
    try:
        jobs = []
        for _ in range(24):
            name = rng.choice(sorted(samplers))
            sampler = samplers[name]
            prime = rng.choice(["", "R", "ROMEO:", "The king "])
            options = dict(
                temperature=rng.choice([0.5, 1.0, 1.5]),
                top_k=rng.choice([0, 3]),
                top_p=rng.choice([1.0, 0.8]),
                greedy=rng.random() < 0.1,
            )
            length, num, seed = rng.randrange(0, 120), rng.randrange(1, 4), rng.randrange(1000)
            q = queue.Queue()
            engine.submit(name, make_job(sampler.vocab.encode(prime), length, num, seed=seed, sink=q.put, **options))
            jobs.append((q, num, sampler, prime, length, seed, options))
        for q, num, sampler, prime, length, seed, options in jobs:
            got = collect(q, num)
            alone = Engine({"m": sampler}, tick_chars=7)
            q2 = queue.Queue()
            alone.submit("m", make_job(sampler.vocab.encode(prime), length, num, seed=seed, sink=q2.put, **options))
            assert got == collect(q2, num)
            alone.close()
        assert engine.streams == 0
    finally:
        engine.close()


def test_a_job_is_charrnn_samples_batch(models, samplers):
    """Sample i of a job uses row i of default_rng(seed).random((num, length)), as the library's
    batched sampler (and so `charrnn sample --num`) does."""
    from charrnn.sampling import iter_samples

    for name, sampler in samplers.items():
        engine = Engine({name: sampler})
        q = queue.Queue()
        engine.submit(
            name, make_job(sampler.vocab.encode("ROMEO:"), 90, 3, temperature=0.9, top_k=4, seed=11, sink=q.put)
        )
        got = collect(q, 3)
        engine.close()
        want = [""] * 3
        model = models[name]
        for batch in iter_samples(
            model.params,
            model.vocab,
            90,
            num=3,
            prime="ROMEO:",
            temperature=0.9,
            top_k=4,
            rng=np.random.default_rng(11),
        ):
            for i, piece in enumerate(batch):
                want[i] += piece
        assert got == want, name


def test_cap_cancel_and_close(samplers):
    sampler = samplers["tiny-rnn"]
    engine = Engine(samplers, max_streams=4, tick_chars=2)
    q = queue.Queue()
    long_job = make_job(sampler.vocab.encode("R"), 10**7, 3, seed=1, sink=q.put)
    engine.submit("tiny-rnn", long_job)
    with pytest.raises(EngineBusy):
        engine.submit("tiny-gru", make_job(np.zeros(0, dtype=np.int64), 5, 2, seed=1, sink=print))
    assert q.get(timeout=30)  # it is running
    long_job.cancel()
    worker = engine.workers()["tiny-rnn"]
    assert wait_until(lambda: engine.streams == 0 and worker.active_rows == 0)
    assert engine.streams == 0 and worker.active_rows == 0
    assert long_job.generated < 10**7

    q = queue.Queue()
    engine.submit("tiny-lstm", make_job(np.zeros(0, dtype=np.int64), 10**7, 1, seed=1, sink=q.put))
    assert q.get(timeout=30)
    engine.close()
    assert isinstance(collect(q, 1), EngineClosed)
    with pytest.raises(EngineClosed):
        engine.submit("tiny-rnn", make_job(np.zeros(0, dtype=np.int64), 5, 1, seed=1, sink=print))
    assert engine.streams == 0
