"""The RNN kernels against central finite differences (float64) and the plain NumPy reference."""

import _thread
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import reference
from charrnn import kernels as kernels_module
from charrnn.kernels import RNNKernels, _ChunkThreads, _exp_f32, _tanh_rows
from charrnn.params import PARAM_NAMES, Params, init_params

VOCAB, HIDDEN, BATCH, SEQ = 7, 5, 3, 6
# With AVX-512, hidden sizes that are multiples of the vector kernel's block width (16 float64 / 32
# float32 columns) take the recurrent step through that kernel; 5 through BLAS.
VECTOR_HIDDEN = 32


def make_case(dtype, vocab=VOCAB, hidden=HIDDEN, batch=BATCH, seq=SEQ, seed=0):
    """Random params (non-zero biases, weights large enough that tanh is not linear), ids, h0."""
    rng = np.random.default_rng(seed)
    params = init_params(vocab, hidden, rng, np.float64)
    params.W[...] *= 2.0
    params.b_h[...] = rng.normal(0.0, 0.5, hidden)
    params.b_y[...] = rng.normal(0.0, 0.5, vocab)
    inputs = rng.integers(0, vocab, (batch, seq)).astype(np.uint8)
    targets = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    h0 = rng.uniform(-0.9, 0.9, (batch, hidden))
    return params.astype(dtype), inputs, targets, h0.astype(dtype)


def reference_result(params, inputs, targets, h0):
    p = {name: a.astype(np.float64) for name, a in params.arrays().items()}
    loss, cache = reference.forward(p, inputs, targets, h0.astype(np.float64))
    grads, dh0 = reference.backward(p, inputs, targets, cache)
    return loss, cache[1][-1], grads, dh0


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def numerical_gradient(loss_of, x, eps=1e-5):
    """Central differences of loss_of() with respect to every entry of x (perturbed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        plus = loss_of()
        x[i] = saved - eps
        minus = loss_of()
        x[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("window, hidden", [(SEQ, HIDDEN), (2, HIDDEN), (SEQ, 16)])
def test_gradients_match_central_differences(window, hidden):
    params, inputs, targets, h0 = make_case(np.float64, hidden=hidden)
    inputs, targets = inputs[:, :window], targets[:, :window]
    kernels = RNNKernels(VOCAB, hidden, BATCH, SEQ, np.float64)
    grads = params.zeros_like()
    kernels.loss_and_grad(params, inputs, targets, h0, grads)
    dh0 = kernels.dh0.copy()

    def loss_of():
        return kernels.loss(params, inputs, targets, h0)

    for name in PARAM_NAMES:
        numeric = numerical_gradient(loss_of, getattr(params, name))
        analytic = getattr(grads, name)
        assert np.abs(analytic).max() > 1e-4, name            # a gradient that is there
        assert relative_error(analytic, numeric) < 1e-6, name
        # The check can fail: a 0.1% error in one entry is far above its threshold.
        wrong = analytic.copy()
        wrong.flat[0] += 1e-3 * np.abs(analytic).max()
        assert relative_error(wrong, numeric) > 1e-6, name
    numeric_h0 = numerical_gradient(loss_of, h0)
    assert relative_error(dh0, numeric_h0) < 1e-6


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("window", [SEQ, 1])
@pytest.mark.parametrize("hidden", [HIDDEN, VECTOR_HIDDEN])
def test_matches_numpy_reference(dtype, tol, threads, window, hidden):
    params, inputs, targets, h0 = make_case(dtype, hidden=hidden)
    inputs, targets = inputs[:, :window], targets[:, :window]
    kernels = RNNKernels(VOCAB, hidden, BATCH, SEQ, dtype, threads=threads)
    grads = params.zeros_like()
    grads.flat[...] = 7.0                                      # overwritten, not accumulated
    loss = kernels.loss_and_grad(params, inputs, targets, h0, grads)
    ref_loss, ref_h_last, ref_grads, ref_dh0 = reference_result(params, inputs, targets, h0)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref_loss, rel=tol)
    np.testing.assert_allclose(kernels.h_last, ref_h_last, rtol=0, atol=tol)
    for name in PARAM_NAMES:
        scale = np.abs(ref_grads[name]).max()
        np.testing.assert_allclose(getattr(grads, name), ref_grads[name], rtol=0,
                                   atol=tol * scale, err_msg=name)
    np.testing.assert_allclose(kernels.dh0, ref_dh0, rtol=0, atol=tol * np.abs(ref_dh0).max())
    assert kernels.dh0.dtype == dtype and kernels.h_last.dtype == dtype


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("batch", [8, 11, 19])
def test_vector_kernel_row_blocks_and_tails(dtype, tol, batch):
    """Full blocks of rows and leftover rows in the recurrent step's vector kernel."""
    params, inputs, targets, h0 = make_case(dtype, hidden=64, batch=batch, seed=5)
    kernels = RNNKernels(VOCAB, 64, batch, SEQ, dtype)
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, h0, grads)
    ref_loss, ref_h_last, ref_grads, ref_dh0 = reference_result(params, inputs, targets, h0)
    assert loss == pytest.approx(ref_loss, rel=tol)
    np.testing.assert_allclose(kernels.h_last, ref_h_last, rtol=0, atol=tol)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(getattr(grads, name), ref_grads[name], rtol=0,
                                   atol=tol * np.abs(ref_grads[name]).max(), err_msg=name)
    np.testing.assert_allclose(kernels.dh0, ref_dh0, rtol=0, atol=tol * np.abs(ref_dh0).max())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_vocabulary_uses_several_logit_blocks(threads, monkeypatch):
    """A vocabulary of thousands: the output layer runs in row blocks (made small here so that
    there are several, the last partial); the result must not care."""
    monkeypatch.setattr(kernels_module, "_LOGIT_BLOCK_ELEMENTS", 1 << 15)
    vocab, hidden, batch, seq = 3000, 4, 5, 50
    params, inputs, targets, h0 = make_case(np.float64, vocab, hidden, batch, seq, seed=3)
    kernels = RNNKernels(vocab, hidden, batch, seq, np.float64, threads=threads)
    assert kernels.rows_per_block < seq   # every chunk has several blocks, the last partial
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, h0, grads)
    ref_loss, ref_h_last, ref_grads, ref_dh0 = reference_result(params, inputs, targets, h0)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(getattr(grads, name), ref_grads[name], rtol=0,
                                   atol=1e-12 * np.abs(ref_grads[name]).max(), err_msg=name)
    np.testing.assert_allclose(kernels.dh0, ref_dh0, rtol=0, atol=1e-12)
    assert kernels.loss(params, inputs, targets, h0) == pytest.approx(ref_loss, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_loss_equals_loss_and_grad(dtype, threads):
    params, inputs, targets, h0 = make_case(dtype)
    kernels = RNNKernels(VOCAB, HIDDEN, BATCH, SEQ, dtype, threads=threads)
    full = kernels.loss_and_grad(params, inputs, targets, h0, params.zeros_like())
    h_last = kernels.h_last.copy()
    kernels.h_last[...] = 0.0
    assert kernels.loss(params, inputs, targets, h0) == full
    np.testing.assert_array_equal(kernels.h_last, h_last)


@pytest.mark.parametrize("threads", [1, 2])
def test_carrying_h_last_back_as_h0(threads):
    """Passing kernels.h_last itself as the next h0 gives the same as passing a copy of it, and
    two windows carried equal one window of twice the length (forward)."""
    params, inputs, targets, h0 = make_case(np.float64, seq=2 * SEQ)
    first, second = slice(0, SEQ), slice(SEQ, 2 * SEQ)
    carried = RNNKernels(VOCAB, HIDDEN, BATCH, SEQ, np.float64, threads=threads)
    copied = RNNKernels(VOCAB, HIDDEN, BATCH, SEQ, np.float64, threads=threads)
    grads_carried, grads_copied = params.zeros_like(), params.zeros_like()
    for k, g in ((carried, grads_carried), (copied, grads_copied)):
        k.loss_and_grad(params, inputs[:, first], targets[:, first], h0, g)
    loss_carried = carried.loss_and_grad(params, inputs[:, second], targets[:, second],
                                         carried.h_last, grads_carried)
    loss_copied = copied.loss_and_grad(params, inputs[:, second], targets[:, second],
                                       copied.h_last.copy(), grads_copied)
    assert loss_carried == loss_copied
    np.testing.assert_array_equal(grads_carried.flat, grads_copied.flat)
    np.testing.assert_array_equal(carried.dh0, copied.dh0)
    np.testing.assert_array_equal(carried.h_last, copied.h_last)

    ref_loss, ref_h_last, _, _ = reference_result(params, inputs, targets, h0)
    forward = RNNKernels(VOCAB, HIDDEN, BATCH, SEQ, np.float64, threads=threads)
    total = forward.loss(params, inputs[:, first], targets[:, first], h0)
    total += forward.loss(params, inputs[:, second], targets[:, second], forward.h_last)
    assert total / 2 == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(forward.h_last, ref_h_last, rtol=0, atol=1e-12)


def test_validation_with_batch_one():
    """The validation path: batch 1, a long text in windows, hidden state carried."""
    params, inputs, targets, h0 = make_case(np.float64, batch=1, seq=25)
    ref_loss, _, _, _ = reference_result(params, inputs, targets, h0)
    kernels = RNNKernels(VOCAB, HIDDEN, 1, 10, np.float64, threads=2)
    h, total = h0, 0.0
    for start in range(0, 25, 10):
        window = slice(start, start + 10)
        total += kernels.loss(params, inputs[:, window], targets[:, window], h) * inputs[:, window].size
        h = kernels.h_last
    assert total / 25 == pytest.approx(ref_loss, rel=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_deterministic_for_a_thread_count(threads):
    params, inputs, targets, h0 = make_case(np.float32, batch=8)
    results = []
    for _ in range(2):
        kernels = RNNKernels(VOCAB, HIDDEN, 8, SEQ, np.float32, threads=threads)
        grads = params.zeros_like()
        loss = kernels.loss_and_grad(params, inputs, targets, h0, grads)
        again = kernels.loss_and_grad(params, inputs, targets, h0, grads.zeros_like())
        assert again == loss
        results.append((loss, grads.flat.copy(), kernels.dh0.copy(), kernels.h_last.copy()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1:], results[1][1:]):
        np.testing.assert_array_equal(a, b)


def test_chunk_threads_hand_errors_to_the_caller():
    threads = _ChunkThreads(2, 3)

    def task(w):
        if w == 1:
            raise ZeroDivisionError("chunk 1")
        return float(w)

    with pytest.raises(ZeroDivisionError):
        threads.run(task)
    assert threads.run(lambda w: 10.0 ** w) == 111.0         # usable afterwards, all chunks run
    threads.close()


def test_chunk_threads_wait_for_workers_when_interrupted():
    """Ctrl-C while the caller waits: run() raises only after the worker's chunk is done."""
    threads = _ChunkThreads(2, 2)
    worker_started = threading.Event()
    finished = []

    def task(w):
        if threading.current_thread() is threading.main_thread():
            worker_started.wait(5.0)          # leave the other chunk to the worker
            return 1.0
        worker_started.set()
        time.sleep(0.3)
        finished.append(w)
        return 1.0

    timer = threading.Timer(0.05, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        threads.run(task)
    assert finished == [1]
    assert threads.run(lambda w: 1.0) == 2.0
    threads.close()


def test_threads_agree_to_rounding():
    params, inputs, targets, h0 = make_case(np.float32, batch=8)
    out = {}
    for threads in (1, 2):
        kernels = RNNKernels(VOCAB, HIDDEN, 8, SEQ, np.float32, threads=threads)
        grads = params.zeros_like()
        out[threads] = kernels.loss_and_grad(params, inputs, targets, h0, grads), grads.flat
    assert out[1][0] == pytest.approx(out[2][0], rel=1e-6)
    np.testing.assert_allclose(out[1][1], out[2][1], rtol=0, atol=1e-6)


def test_fast_float32_math_is_accurate():
    x = np.linspace(-12.0, 12.0, 200001).astype(np.float32).reshape(1, -1)
    y = x.copy()
    _tanh_rows(y)
    assert np.abs(y.astype(np.float64) - np.tanh(x.astype(np.float64))).max() < 3e-7
    near_zero = x[np.abs(x) < 0.5]
    t = near_zero.reshape(1, -1).copy()
    _tanh_rows(t)
    exact = np.tanh(near_zero.astype(np.float64))
    nonzero = near_zero != 0
    assert np.abs(t[0][nonzero] / exact[nonzero] - 1).max() < 2e-6
    for v in np.linspace(-87.0, 88.0, 3001).astype(np.float32):
        assert abs(float(_exp_f32(v)) / np.exp(np.float64(v)) - 1) < 3e-7, v


def test_softmax_survives_large_logits():
    params, inputs, targets, h0 = make_case(np.float32)
    params.b_y[...] = np.float32(80.0) * np.arange(VOCAB, dtype=np.float32)
    kernels = RNNKernels(VOCAB, HIDDEN, BATCH, SEQ, np.float32)
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, h0, grads)
    ref_loss = reference_result(params, inputs, targets, h0)[0]
    assert np.isfinite(loss) and loss == pytest.approx(ref_loss, rel=1e-5)
    assert np.all(np.isfinite(grads.flat))


def test_nan_parameters_give_nan_loss():
    params, inputs, targets, h0 = make_case(np.float32)
    params.W[0, 0] = np.nan
    kernels = RNNKernels(VOCAB, HIDDEN, BATCH, SEQ, np.float32)
    assert np.isnan(kernels.loss_and_grad(params, inputs, targets, h0, params.zeros_like()))


def test_bad_arguments_raise_value_error():
    params, inputs, targets, h0 = make_case(np.float32)
    kernels = RNNKernels(VOCAB, HIDDEN, BATCH, SEQ, np.float32)
    grads = params.zeros_like()
    bad_calls = {
        "float inputs": (params, inputs.astype(np.float32), targets, h0, grads),
        "list inputs": (params, inputs.tolist(), targets, h0, grads),
        "1-d inputs": (params, inputs[0], targets[0], h0, grads),
        "wrong batch": (params, inputs[:2], targets[:2], h0, grads),
        "too long": (params, np.zeros((BATCH, SEQ + 1), np.int32), np.zeros((BATCH, SEQ + 1), np.int32), h0, grads),
        "empty window": (params, inputs[:, :0], targets[:, :0], h0, grads),
        "shape mismatch": (params, inputs, targets[:, :2], h0, grads),
        "id too large": (params, inputs + VOCAB, targets, h0, grads),
        "negative id": (params, inputs, -targets, h0, grads),
        "h0 dtype": (params, inputs, targets, h0.astype(np.float64), grads),
        "h0 shape": (params, inputs, targets, h0[:, :2], grads),
        "params dtype": (params.astype(np.float64), inputs, targets, h0, grads),
        "grads dtype": (params, inputs, targets, h0, grads.astype(np.float64)),
        "params size": (Params(VOCAB + 1, HIDDEN), inputs, targets, h0, grads),
        "grads size": (params, inputs, targets, h0, Params(VOCAB, HIDDEN + 1)),
        "grads is params": (params, inputs, targets, h0, params),
        "not params": (params.arrays(), inputs, targets, h0, grads),
    }
    for what, args in bad_calls.items():
        with pytest.raises(ValueError):
            kernels.loss_and_grad(*args)
            pytest.fail(what)
        if what not in ("grads dtype", "grads size", "grads is params"):
            with pytest.raises(ValueError):
                kernels.loss(*args[:4])
    for kwargs in ({"dtype": np.float16}, {"threads": 0}, {"hidden": 0}, {"batch_size": 2.0},
                   {"seq_length": True}):
        args = dict(vocab_size=VOCAB, hidden=HIDDEN, batch_size=BATCH, seq_length=SEQ)
        args.update(kwargs)
        with pytest.raises(ValueError):
            RNNKernels(**args)


def run_in_subprocess(env_changes, calls):
    """Run test functions of this module in a fresh interpreter with some environment changed."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = "\n".join(["import sys, numpy as np",
                        f"sys.path[:0] = [{tests_dir!r}, {os.path.dirname(tests_dir)!r}]",
                        "import test_kernels as t", "from charrnn import kernels"] + calls)
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, **env_changes),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_kernels_compiled_without_avx512():
    """Compiled for a CPU without AVX-512 (Haswell) the recurrent step goes through OpenBLAS."""
    run_in_subprocess({"NUMBA_CPU_NAME": "haswell"}, [
        "assert not kernels._AVX512",
        "for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):",
        "    for batch in (8, 11):",
        "        t.test_vector_kernel_row_blocks_and_tails(dtype, tol, batch)",
        "t.test_matches_numpy_reference(np.float32, 2e-5, 2, t.SEQ, t.VECTOR_HIDDEN)",
        "t.test_validation_with_batch_one()",
    ])


def test_fallback_blas_matches_reference():
    """Where numpy's BLAS is not an ILP64 OpenBLAS the kernels call a fallback under the same
    symbol; the cached kernels must give the same results through it."""
    run_in_subprocess({"CHARRNN_BLAS": "fallback"}, [
        "assert kernels.BLAS_BACKEND.startswith('fallback'), kernels.BLAS_BACKEND",
        "t.test_matches_numpy_reference(np.float64, 1e-12, 2, t.SEQ, t.HIDDEN)",
        "t.test_matches_numpy_reference(np.float32, 2e-5, 1, 2, t.VECTOR_HIDDEN)",
    ])
