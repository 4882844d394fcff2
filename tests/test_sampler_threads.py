"""The sampler's step split over threads (charrnn.kernels.sampler, charrnn.kernels.sync): the
same bits with one thread or two, a spin barrier that notices a late thread, and a fall-back to
one thread that keeps a busy machine from slowing it down."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from numba import njit

from charrnn.kernels import stepgemm
from charrnn.kernels.layout import GRU, LSTM, RNN
from charrnn.kernels.parts import part_count
from charrnn.kernels.sampler import _add_rows_times, _cells, _wait
from charrnn.kernels.sync import COUNTER_STRIDE, arrive_and_wait, cycle_counter
from charrnn.kernels.threads import TeamThreads
from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab
from charrnn.sampling import BatchSampler
from charrnn.sampling import batch as sampling

CHARS = tuple("\n !,.:ORaehilnostw")
CELL_CASES = [("rnn", 1), ("rnn", 2), ("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 3)]


def make_params(hidden, cell, layers, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(ModelSpec(cell, layers, hidden, len(CHARS)), rng, input_scale=1.5)
    for name in params.names():
        if params[name].ndim == 1:
            params[name][...] += rng.normal(0.0, 0.5, size=params[name].shape)
    return params


def run(sampler, n, k, seed=1):
    """Every row reads a prime of its own, then draws k characters with its own options:
    (ids (n, k), states)."""
    rng = np.random.default_rng(seed)
    states = sampler.new_states(n)
    for row in range(n):
        sampler.read(states, row, rng.integers(0, len(CHARS), size=row + 3))
    uniforms = rng.random((n, k))
    options = (
        rng.uniform(0.5, 1.3, n),
        rng.integers(3, 9, n) * (rng.random(n) < 0.5),
        rng.uniform(0.8, 1.0, n),
        np.arange(n) == n - 1,
    )
    ids = np.empty((n, k), dtype=np.int64)
    sampler.draw(states, uniforms, *options, ids)
    return ids, states


@pytest.mark.parametrize("cell, layers", CELL_CASES)
@pytest.mark.parametrize("hidden", [12, 64])  # 64: the packed product, with AVX-512
@pytest.mark.parametrize("n", [1, 2, 5])
def test_two_threads_give_the_bits_of_one(cell, layers, hidden, n):
    params = make_params(hidden, cell, layers)
    one = BatchSampler(params, Vocab(CHARS), threads=1)
    two = BatchSampler(params, Vocab(CHARS), threads=2)
    assert (one.parts, two.parts) == (1, 2)
    assert one._packed == two._packed == (hidden == 64 and stepgemm.AVX512)
    ids_one, states_one = run(one, n, 37)
    ids_two, states_two = run(two, n, 37)  # 37: odd, the state ends in the spare
    np.testing.assert_array_equal(ids_one, ids_two)
    np.testing.assert_array_equal(states_one, states_two)
    assert len({tuple(row) for row in ids_one}) == n


def test_a_column_has_the_same_bits_in_any_width_of_product():
    """What the split above rests on, kernel by kernel: a column of the row loop's product, and a
    unit of the cells, is the same whether it falls in a loop's vector body or in its scalar
    remainder. Compiled for a target without FMA (NUMBA_CPU_NAME=generic, CI's second pass)
    this failed while LLVM could reassociate: x86's backend grouped the row loop's adds, and
    tanh's divisions, differently in the two."""
    rng = np.random.default_rng(2)
    n, K, N = 3, 13, 37  # K: four rows at a time, then one
    x = rng.standard_normal((n, K)).astype(np.float32)
    M = rng.standard_normal((K, N)).astype(np.float32)
    start = rng.standard_normal((n, N)).astype(np.float32)
    whole = start.copy()
    _add_rows_times(x, M, whole)
    for width in range(1, N):
        part = start[:, :width].copy()
        _add_rows_times(x, np.ascontiguousarray(M[:, :width]), part)
        np.testing.assert_array_equal(part, whole[:, :width], err_msg=f"width {width}")
    H = 13
    for cell, gates, kinds in ((RNN, 1, 1), (LSTM, 4, 2), (GRU, 3, 1)):
        ax = (3 * rng.standard_normal((n, gates * H))).astype(np.float32)
        ah = (3 * rng.standard_normal((n, gates * H))).astype(np.float32)
        b_hn = rng.standard_normal(H).astype(np.float32)
        cur = rng.uniform(-1, 1, (n, 1, kinds, H)).astype(np.float32)
        whole = np.zeros_like(cur)
        _cells(cell, H, ax, ah, b_hn, cur, whole, 0, 0)
        for unit in range(H):
            columns = np.arange(gates) * H + unit
            alone = np.zeros_like(cur)
            _cells(
                cell,
                1,
                np.ascontiguousarray(ax[:, columns]),
                np.ascontiguousarray(ah[:, columns]),
                b_hn[unit : unit + 1].copy(),
                cur,
                alone,
                0,
                unit,
            )
            np.testing.assert_array_equal(alone[..., unit], whole[..., unit], err_msg=f"{cell} {unit}")


def test_the_fall_back_to_one_thread_gives_the_bits_of_two():
    params = make_params(64, "lstm", 2)
    two = BatchSampler(params, Vocab(CHARS), threads=2)
    expected = run(two, 3, 20)
    two._alone_until = time.monotonic() + 3600  # as after a busy spell: one thread
    calls = []
    original = sampling._team_run
    try:
        sampling._team_run = lambda *a: calls.append(a) or original(*a)
        got = run(two, 3, 20)
    finally:
        sampling._team_run = original
    assert calls == []
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_array_equal(expected[1], got[1])


def test_part_count():
    assert part_count(512, 4, 2, True) == 2
    assert part_count(512, 4, 1, True) == 1
    assert part_count(13, 1, 2, False) == 1  # H must split evenly
    assert part_count(32, 1, 2, True) == 1  # 16 columns a part: not a whole strip
    assert part_count(32, 4, 2, True) == 2  # 64 columns a part
    assert part_count(32, 1, 2, False) == 2


def test_default_sampler_uses_two_threads_for_a_large_model_only(monkeypatch):
    monkeypatch.setattr(sampling, "default_threads", lambda: 2)
    calls = []
    original = sampling._team_run
    monkeypatch.setattr(sampling, "_team_run", lambda *a: calls.append(a) or original(*a))
    small = BatchSampler(make_params(12, "rnn", 1), Vocab(CHARS))
    run(small, 1, 5)
    assert small.parts == 2 and calls == []  # two parts, one thread
    large = BatchSampler(make_params(256, "lstm", 1), Vocab(CHARS))
    run(large, 1, 5)
    assert large.parts == 2 and len(calls) == 2  # the prime and the draw


def test_sampler_falls_back_to_one_thread_after_long_waits(monkeypatch):
    sampler = BatchSampler(make_params(64, "rnn", 1), Vocab(CHARS), threads=2)
    monkeypatch.setattr(sampling, "_team_run", lambda parts, task: 1.8)  # waited 90% of the time
    run(sampler, 1, sampling.JUDGED_STEPS - 1)
    assert sampler._alone_until == 0.0  # too short a call to judge by
    before = time.monotonic()
    run(sampler, 1, sampling.JUDGED_STEPS)
    assert sampler._alone_until >= before + sampling.ALONE_SECONDS

    def refuse(*args):
        raise AssertionError("the threads were used again too soon")

    monkeypatch.setattr(sampling, "_team_run", refuse)
    run(sampler, 1, 10)  # runs on this thread


def _arrive_late(counters, epoch, arrive):
    """A thread that calls arrive() 0.2 s after thread 0 has arrived at round `epoch` (an
    event, not a guess at how long thread 0 takes to get there: the first call of a kernel
    loads it from Numba's cache, which takes long on a busy machine)."""

    def late():
        while counters[0] < epoch:
            time.sleep(0.001)
        time.sleep(0.2)
        arrive()

    thread = threading.Thread(target=late)
    thread.start()
    return thread


def test_a_barrier_counts_the_cycles_it_waited():
    counters = np.zeros(2 * COUNTER_STRIDE, dtype=np.int64)
    late = _arrive_late(counters, 1, lambda: arrive_and_wait(counters, 1, 1))
    waited_late = arrive_and_wait(counters, 0, 1)
    late.join()
    waited_on_time = []
    for _ in range(5):  # the least of a few: a time slice lost to another process is no wait
        counters[:] = 0
        counters[1 * COUNTER_STRIDE] = 1  # on time: the other has arrived already
        waited_on_time.append(arrive_and_wait(counters, 0, 1))
    assert waited_late > 100 * max(min(waited_on_time), 1000)  # 0.2 s: hundreds of millions


@njit(nogil=True)
def _stamp_then_arrive(counters, me, epoch, stamp):
    """The cycle counter just before thread `me` arrives at round `epoch` (in stamp[0])."""
    stamp[0] = cycle_counter()
    arrive_and_wait(counters, me, epoch)


def test_the_first_round_is_not_counted_as_waiting():
    """The sampler's barrier counts no cycles at the first round (where the caller waits for the
    second thread to wake up) and notes when that round ended, after the late thread arrived;
    from the second round on, a wait for a late thread is counted."""
    counters = np.zeros(2 * COUNTER_STRIDE, dtype=np.int64)
    for epoch in (1, 2):
        stamp = np.zeros(1, dtype=np.int64)
        late = _arrive_late(counters, epoch, lambda: _stamp_then_arrive(counters, 1, epoch, stamp))  # noqa: B023
        waited = _wait(counters, 0, epoch)
        late.join()
        if epoch == 1:
            assert waited == 0
            assert counters[1] >= stamp[0]  # the round ended after the other came
            first_end = counters[1]
        else:
            assert counters[1] == first_end  # noted once
            assert waited > 0 or stamp[0] == 0  # (0: a CPU without a cycle counter)


def test_a_slow_start_is_not_counted_as_waiting(monkeypatch):
    """The sampler judges its threads by the share of time the kernels report waiting (from
    their second barrier on, see test_the_first_round_is_not_counted_as_waiting), and a slow
    start of the second thread changes no bit. (How much the threads wait for each other
    depends on the machine's load, so no bound on it is asserted.)"""
    params = make_params(256, "lstm", 1)
    sampler = BatchSampler(params, Vocab(CHARS), threads=2)
    run(sampler, 1, 200)
    assert 0 <= sampler.last_waiting <= 1
    real = sampling.run_parts
    shares = {}
    second_started = threading.Event()

    def slow_second_part(first, last, *args):
        if first == 1:
            time.sleep(0.3)
            second_started.set()
        shares[first] = real(first, last, *args)
        return shares[first]

    monkeypatch.setattr(sampling, "run_parts", slow_second_part)
    sampler._alone_until = 0.0  # two threads, even if the machine was busy just now
    prime = np.arange(100) % len(CHARS)
    states = sampler.new_states(1)
    sampler.read(states, 0, prime)
    assert second_started.is_set()  # the caller did wait for it
    assert sorted(shares) == [0, 1] and all(0 <= share <= 1 for share in shares.values())
    assert sampler.last_waiting == pytest.approx((shares[0] + shares[1]) / 2)
    assert (sampler._alone_until > 0) == (sampler.last_waiting > sampling.WAITING_LIMIT)
    alone = BatchSampler(params, Vocab(CHARS), threads=1)
    expected = alone.new_states(1)
    alone.read(expected, 0, prime)
    np.testing.assert_array_equal(states, expected)


def test_a_part_that_fails_releases_the_other(monkeypatch):
    """If one part raises before it reaches the kernel, the other is not left waiting at a
    barrier forever: the call raises."""
    sampler = BatchSampler(make_params(64, "gru", 1), Vocab(CHARS), threads=2)
    real = sampling.run_parts

    def failing(first, last, *args):
        if first == 1:
            raise RuntimeError("part 1 failed")
        return real(first, last, *args)

    monkeypatch.setattr(sampling, "run_parts", failing)
    outcome = []

    def call():
        try:
            run(sampler, 2, 50)
        except RuntimeError as error:
            outcome.append(str(error))

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    assert outcome == ["part 1 failed"]


def test_team_threads_run_each_task_on_a_thread_of_its_own():
    team = TeamThreads(3)
    seen = {}
    barrier = threading.Barrier(3, timeout=20)  # deadlocks unless all three run at once

    def task(w):
        seen[w] = threading.get_ident()
        barrier.wait()
        return float(w)

    for _ in range(3):
        assert team.run(task) == 3.0
        assert sorted(seen) == [0, 1, 2] and len(set(seen.values())) == 3
        assert seen[0] == threading.get_ident()
    team.close()


def _sample_in_child(params, queue):
    sampler = BatchSampler(params, Vocab(CHARS), threads=2)
    queue.put(run(sampler, 1, 40)[0].tolist())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_samples_with_threads_of_its_own():
    """After the parent has sampled on two threads, a child made by fork (multiprocessing's
    default on Linux) has the parent's team but not its thread: it must not wait for it."""
    import multiprocessing

    params = make_params(64, "gru", 1)
    expected = run(BatchSampler(params, Vocab(CHARS), threads=2), 1, 40)[0].tolist()
    assert sampling._TEAMS  # the parent's team exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_sample_in_child, args=(params, queue))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    assert queue.get(timeout=5) == expected
