"""The training kernels (rnn, gru, lstm; layers; dropout) against central finite differences
(float64) and the plain NumPy reference (tests/reference.py)."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import reference

from charrnn.kernels import dropout as dropout_module
from charrnn.kernels import stepgemm
from charrnn.kernels import window as window_module
from charrnn.kernels.fastmath import fast_exp, fast_sigmoid, fast_tanh
from charrnn.kernels.threads import ChunkThreads
from charrnn.kernels.window import Kernels
from charrnn.model.params import Params, init_params
from charrnn.model.spec import CELLS, ModelSpec

VOCAB, HIDDEN, BATCH, SEQ = 7, 5, 3, 6
# With AVX-512, hidden sizes that are multiples of the vector kernel's block width (16 float64 / 32
# float32 columns) take the recurrent step through that kernel; 5 through BLAS.
VECTOR_HIDDEN = 32
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


def _numba_target() -> str:
    """The CPU Numba compiles for: NUMBA_CPU_NAME's, else this host's (as LLVM names it)."""
    import llvmlite.binding as llvm
    from numba.core import config

    return config.CPU_NAME or llvm.get_host_cpu_name()


NO_AVX512 = (
    f"needs AVX-512 (Numba compiles for {_numba_target()}: no avx512f); "
    "test_step_product_at_strip_widths_through_openblas covers the path that runs "
    "instead"
)


def make_case(cell, layers=1, dtype=np.float64, vocab=VOCAB, hidden=HIDDEN, batch=BATCH, seq=SEQ, seed=0):
    """Random params (non-zero biases, weights large enough that the cells are not linear), ids,
    an initial state."""
    spec = ModelSpec(cell, layers, hidden, vocab)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, np.float64)
    for name, array in params.arrays().items():
        if name.startswith("W."):
            array *= 1.5
        elif array.ndim == 1:
            array[...] = rng.normal(0.0, 0.5, array.shape)
    inputs = rng.integers(0, vocab, (batch, seq)).astype(np.uint8)
    targets = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    state0 = rng.uniform(-0.9, 0.9, spec.state_shape(batch))
    return spec, params.astype(dtype), inputs, targets, state0.astype(dtype)


def masks_of(spec, batch, T, p, seed, step):
    """The kernels' dropout masks as scale factors, one (B, T, H) array per layer, or None."""
    if not p:
        return None
    return [
        dropout_module.kept(seed, step, layer, np.arange(batch), T, spec.hidden, p) / (1.0 - p)
        for layer in range(spec.layers)
    ]


def reference_result(spec, params, inputs, targets, state0, p=0.0, seed=0, step=0):
    """(loss, state_last, grads, dstate0) of the NumPy reference, in float64."""
    arrays = {name: a.astype(np.float64) for name, a in params.arrays().items()}
    state0 = state0.astype(np.float64)
    masks = masks_of(spec, *inputs.shape, p, seed, step)
    loss, state_last, cache = reference.forward(spec.cell, arrays, inputs, targets, state0, masks)
    grads, dstate0 = reference.backward(spec.cell, arrays, inputs, targets, state0, cache, masks)
    return loss, state_last, grads, dstate0


def assert_matches_reference(kernels, loss, grads, ref, tol):
    ref_loss, ref_state, ref_grads, ref_dstate0 = ref
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref_loss, rel=tol)
    np.testing.assert_allclose(kernels.state_last, ref_state, rtol=0, atol=tol)
    for name in grads.names():
        scale = np.abs(ref_grads[name]).max()
        assert scale > 0, name
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=0, atol=tol * scale, err_msg=name)
    np.testing.assert_allclose(kernels.dstate0, ref_dstate0, rtol=0, atol=tol * np.abs(ref_dstate0).max())


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


def assert_gradient(analytic, numeric, what):
    assert np.abs(analytic).max() > 1e-4, what  # a gradient that is there
    assert relative_error(analytic, numeric) < 1e-6, what
    # The check can fail: a 0.1% error in one entry is far above its threshold.
    wrong = analytic.copy()
    wrong.flat[np.argmax(np.abs(analytic))] += 1e-3 * np.abs(analytic).max()
    assert relative_error(wrong, numeric) > 1e-6, what


# -- gradients and the reference -------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "layers, p, hidden, window",
    [(1, 0.0, HIDDEN, SEQ), (1, 0.0, HIDDEN, 2), (2, 0.0, HIDDEN, SEQ), (2, 0.4, HIDDEN, SEQ), (3, 0.3, 16, 4)],
)
def test_gradients_match_central_differences(cell, layers, p, hidden, window):
    spec, params, inputs, targets, state0 = make_case(cell, layers, hidden=hidden)
    inputs, targets = inputs[:, :window], targets[:, :window]
    kernels = Kernels(spec, BATCH, SEQ, np.float64, dropout=p)
    grads = params.zeros_like()
    kernels.loss_and_grad(params, inputs, targets, state0, grads, seed=3, step=11)
    dstate0 = kernels.dstate0.copy()
    scratch = params.zeros_like()

    def loss_of():
        if p:  # the same masks: the same seed and step
            return kernels.loss_and_grad(params, inputs, targets, state0, scratch, seed=3, step=11)
        return kernels.loss(params, inputs, targets, state0)

    for name in params.names():
        assert_gradient(grads[name], numerical_gradient(loss_of, params[name]), name)
    numeric = numerical_gradient(loss_of, state0)
    for kind in range(spec.state_kinds):  # h, and c for lstm
        assert_gradient(dstate0[:, :, kind], numeric[:, :, kind], f"state0 kind {kind}")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layers, p", [(1, 0.0), (2, 0.0), (3, 0.5)])
@pytest.mark.parametrize("hidden", [HIDDEN, VECTOR_HIDDEN])
def test_matches_numpy_reference(cell, dtype, threads, layers, p, hidden):
    spec, params, inputs, targets, state0 = make_case(cell, layers, dtype, hidden=hidden)
    kernels = Kernels(spec, BATCH, SEQ, dtype, threads=threads, dropout=p)
    grads = params.zeros_like()
    grads.flat[...] = 7.0  # overwritten, not accumulated
    loss = kernels.loss_and_grad(params, inputs, targets, state0, grads, seed=12, step=34)
    ref = reference_result(spec, params, inputs, targets, state0, p, seed=12, step=34)
    assert_matches_reference(kernels, loss, grads, ref, TOLERANCE[dtype])
    assert kernels.dstate0.dtype == dtype and kernels.state_last.dtype == dtype


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("window", [1, SEQ])
def test_short_windows(cell, window):
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float64)
    inputs, targets = inputs[:, :window], targets[:, :window]
    kernels = Kernels(spec, BATCH, SEQ, np.float64, threads=2, dropout=0.2)
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, state0, grads, seed=1, step=2)
    ref = reference_result(spec, params, inputs, targets, state0, 0.2, seed=1, step=2)
    assert_matches_reference(kernels, loss, grads, ref, 1e-12)


# -- the recurrent step's product ------------------------------------------------------------------


def _product_case(dtype, m, k, n, width, seed=0):
    """a (m, k), w (k, n), c (m, n), and w as the step product's operand in strips of `width`."""
    rng = np.random.default_rng(seed)
    a, w, c = (rng.standard_normal(shape).astype(dtype) for shape in ((m, k), (k, n), (m, n)))
    operand = np.zeros((n // width, k, width), dtype)
    stepgemm.pack(w, operand)
    transposed = np.zeros_like(operand)
    stepgemm.pack_transposed(np.ascontiguousarray(w.T), transposed)
    np.testing.assert_array_equal(transposed, operand)
    return a, operand, c, w


def _check_product(a, operand, c, w, tol):
    for accumulate in (False, True):
        out = c.copy()
        stepgemm.step_product(a, operand, out, accumulate)
        expected = a.astype(np.float64) @ w.astype(np.float64) + (c if accumulate else 0)
        np.testing.assert_allclose(out, expected, rtol=0, atol=tol * np.abs(expected).max())


@pytest.mark.skipif(not stepgemm.AVX512, reason=NO_AVX512)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", [1, 8, 11, 16, 19])
@pytest.mark.parametrize("shape", ["forward", "backward"])
def test_avx512_step_product_matches_numpy(dtype, m, shape):
    """The generated AVX-512 kernel on packed operands (n a multiple of its strip width): full
    blocks of 8 rows, rows left over (blocks of 4, 2, 1; wide and narrow column blocks),
    accumulate or not; for the forward shape (H, 4H) and the backward one (4H, H)."""
    strip = stepgemm.block_columns(np.dtype(dtype).itemsize)
    assert stepgemm.operand_width(4 * strip, np.dtype(dtype).itemsize) == strip
    H = 5 * strip  # leaves narrow column blocks after the 8-vector ones
    k, n = (H, 4 * H) if shape == "forward" else (4 * H, H)
    _check_product(*_product_case(dtype, m, k, n, strip), TOLERANCE[dtype])


@pytest.mark.skipif(not stepgemm.AVX512, reason=NO_AVX512)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("strips", [1, 2, 3, 4, 5, 7, 9])
def test_avx512_step_product_rows_are_bit_independent(dtype, strips):
    """Every block shape (8, 4, 2 and 1 rows; wide and narrow column blocks, for every number of
    columns left) gives each row the bits it gets alone: the sampler's streams rely on it."""
    strip = stepgemm.block_columns(np.dtype(dtype).itemsize)
    a, operand, c, w = _product_case(dtype, 19, 3 * strip, strips * strip, strip, seed=strips)
    for m in range(1, 20):
        _check_product(a[:m], operand, c[:m], w, TOLERANCE[dtype])
        together = np.zeros((m, w.shape[1]), dtype)
        stepgemm.step_product(a[:m], operand, together, False)
        for row in range(m):
            alone = np.zeros((1, w.shape[1]), dtype)
            stepgemm.step_product(a[row : row + 1], operand, alone, False)
            np.testing.assert_array_equal(alone[0], together[row])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_step_product_through_openblas(dtype):
    """n not a multiple of the vector kernel's strip: the operand is the plain matrix and OpenBLAS
    does the product (on any CPU)."""
    n = 20
    assert stepgemm.operand_width(n, np.dtype(dtype).itemsize) == n
    _check_product(*_product_case(dtype, 11, 12, n, n), TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", [1, 8, 11, 19])
@pytest.mark.parametrize("shape", ["forward", "backward"])
def test_step_product_at_strip_widths_through_openblas(dtype, m, shape):
    """The shapes of the AVX-512 kernel's tests, as every CPU without AVX-512 runs them: the
    operand is the plain matrix (one strip of n columns) and OpenBLAS does the product."""
    itemsize = np.dtype(dtype).itemsize
    strip = stepgemm.block_columns(itemsize)
    H = 5 * strip
    k, n = (H, 4 * H) if shape == "forward" else (4 * H, H)
    if not stepgemm.AVX512:
        assert stepgemm.operand_width(n, itemsize) == n
    _check_product(*_product_case(dtype, m, k, n, n), TOLERANCE[dtype])


@pytest.mark.parametrize("dtype, hidden", [(np.float32, 8), (np.float64, 4)])
def test_forward_and_backward_products_on_different_paths(dtype, hidden):
    """An LSTM whose 4H columns fill the vector kernel's strips but whose H does not: with
    AVX-512 the forward step product takes the vector kernel and the backward one OpenBLAS."""
    spec, params, inputs, targets, state0 = make_case("lstm", 2, dtype, hidden=hidden, batch=9)
    itemsize = np.dtype(dtype).itemsize
    if stepgemm.AVX512:
        assert stepgemm.operand_width(4 * hidden, itemsize) != stepgemm.operand_width(hidden, itemsize)
    kernels = Kernels(spec, 9, SEQ, dtype, threads=2, dropout=0.3)
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, state0, grads, seed=2, step=7)
    ref = reference_result(spec, params, inputs, targets, state0, 0.3, seed=2, step=7)
    assert_matches_reference(kernels, loss, grads, ref, TOLERANCE[dtype])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [8, 11, 19])
def test_kernel_row_blocks_and_tails(cell, dtype, batch):
    """The whole kernels at a hidden size of whole strips: with AVX-512 the vector step product
    (full blocks of rows and leftover rows), without it OpenBLAS on the plain matrices."""
    spec, params, inputs, targets, state0 = make_case(cell, 2, dtype, hidden=64, batch=batch, seed=5)
    kernels = Kernels(spec, batch, SEQ, dtype)
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, state0, grads)
    ref = reference_result(spec, params, inputs, targets, state0)
    assert_matches_reference(kernels, loss, grads, ref, TOLERANCE[dtype])


# -- windows, threads, evaluation ------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_large_vocabulary_uses_several_logit_blocks(cell, threads, monkeypatch):
    """A vocabulary of thousands: the output layer runs in row blocks (made small here so that
    there are several, the last partial); the result must not care."""
    monkeypatch.setattr(window_module, "LOGIT_BLOCK_ELEMENTS", 1 << 15)
    vocab, hidden, batch, seq = 3000, 4, 5, 50
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float64, vocab, hidden, batch, seq, seed=3)
    kernels = Kernels(spec, batch, seq, np.float64, threads=threads)
    assert kernels.rows_per_block < seq  # every chunk has several blocks, the last partial
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, state0, grads)
    ref = reference_result(spec, params, inputs, targets, state0)
    assert_matches_reference(kernels, loss, grads, ref, 1e-12)
    assert kernels.loss(params, inputs, targets, state0) == pytest.approx(ref[0], rel=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_loss_equals_loss_and_grad(cell, dtype, threads):
    spec, params, inputs, targets, state0 = make_case(cell, 2, dtype)
    kernels = Kernels(spec, BATCH, SEQ, dtype, threads=threads)
    full = kernels.loss_and_grad(params, inputs, targets, state0, params.zeros_like())
    state_last = kernels.state_last.copy()
    kernels.state_last[...] = 0.0
    assert kernels.loss(params, inputs, targets, state0) == full
    np.testing.assert_array_equal(kernels.state_last, state_last)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("threads", [1, 2])
def test_window_cut_in_two_equals_the_whole(cell, threads):
    """Passing kernels.state_last itself as the next state0 gives the same as passing a copy of
    it, and two windows carried equal one window of twice the length."""
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float64, seq=2 * SEQ)
    first, second = slice(0, SEQ), slice(SEQ, 2 * SEQ)
    carried = Kernels(spec, BATCH, SEQ, np.float64, threads=threads)
    copied = Kernels(spec, BATCH, SEQ, np.float64, threads=threads)
    grads_carried, grads_copied = params.zeros_like(), params.zeros_like()
    for k, g in ((carried, grads_carried), (copied, grads_copied)):
        k.loss_and_grad(params, inputs[:, first], targets[:, first], state0, g)
    loss_carried = carried.loss_and_grad(
        params, inputs[:, second], targets[:, second], carried.state_last, grads_carried
    )
    loss_copied = copied.loss_and_grad(
        params, inputs[:, second], targets[:, second], copied.state_last.copy(), grads_copied
    )
    assert loss_carried == loss_copied
    np.testing.assert_array_equal(grads_carried.flat, grads_copied.flat)
    np.testing.assert_array_equal(carried.dstate0, copied.dstate0)
    np.testing.assert_array_equal(carried.state_last, copied.state_last)

    ref_loss, ref_state, _, _ = reference_result(spec, params, inputs, targets, state0)
    forward = Kernels(spec, BATCH, SEQ, np.float64, threads=threads)
    total = forward.loss(params, inputs[:, first], targets[:, first], state0)
    total += forward.loss(params, inputs[:, second], targets[:, second], forward.state_last)
    assert total / 2 == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(forward.state_last, ref_state, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_validation_with_batch_one(cell):
    """The validation path: batch 1, a long text in windows, the state carried."""
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float64, batch=1, seq=25)
    ref_loss = reference_result(spec, params, inputs, targets, state0)[0]
    kernels = Kernels(spec, 1, 10, np.float64, threads=2)
    state, total = state0, 0.0
    for start in range(0, 25, 10):
        window = slice(start, start + 10)
        total += kernels.loss(params, inputs[:, window], targets[:, window], state) * inputs[:, window].size
        state = kernels.state_last
    assert total / 25 == pytest.approx(ref_loss, rel=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("threads", [1, 2])
def test_deterministic_for_a_thread_count(cell, threads):
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float32, batch=8)
    results = []
    for _ in range(2):
        kernels = Kernels(spec, 8, SEQ, np.float32, threads=threads, dropout=0.25)
        grads = params.zeros_like()
        loss = kernels.loss_and_grad(params, inputs, targets, state0, grads, seed=4, step=9)
        again = kernels.loss_and_grad(params, inputs, targets, state0, grads.zeros_like(), seed=4, step=9)
        assert again == loss
        results.append((loss, grads.flat.copy(), kernels.dstate0.copy(), kernels.state_last.copy()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1:], results[1][1:], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_threads_agree_to_rounding(cell, p):
    """1 and 2 threads: the same results to float32 rounding, dropout masks included."""
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float32, batch=8)
    out = {}
    for threads in (1, 2):
        kernels = Kernels(spec, 8, SEQ, np.float32, threads=threads, dropout=p)
        grads = params.zeros_like()
        loss = kernels.loss_and_grad(params, inputs, targets, state0, grads, seed=8, step=1)
        out[threads] = loss, grads.flat, kernels.dstate0.copy()
    assert out[1][0] == pytest.approx(out[2][0], rel=1e-6)
    np.testing.assert_allclose(out[1][1], out[2][1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[1][2], out[2][2], rtol=0, atol=1e-6)


# -- dropout ---------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z):
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _kept_by_the_docstring(seed, step, layer, row, t, j, p):
    key = _mix64(_mix64((seed & _MASK64) ^ _GOLDEN) + step)
    row_key = _mix64(_mix64(_mix64(key + layer) + row) + t)
    bits = _mix64(row_key + (j + 1) * _GOLDEN)
    return (bits >> 40) >= round(p * (1 << 24))


def test_dropout_hash_is_the_pinned_one():
    """The masks follow charrnn/kernels/dropout.py's docstring, bit for bit (a change to the
    hash changes every dropout run: it must be deliberate)."""
    for seed, step, layer, p in ((0, 0, 0, 0.5), (12345, 678, 2, 0.3), (-1, 2**40, 1, 0.1), (2**63 + 7, 5, 0, 0.9)):
        rows = np.array([0, 1, 31, 1000])
        mask = dropout_module.kept(seed, step, layer, rows, 3, 17, p)
        expected = np.array(
            [
                [[_kept_by_the_docstring(seed, step, layer, int(r), t, j, p) for j in range(17)] for t in range(3)]
                for r in rows
            ]
        )
        np.testing.assert_array_equal(mask, expected)


def test_dropout_keeps_the_right_fraction_and_varies():
    rows = np.arange(64)
    for p in (0.1, 0.5, 0.8):
        mask = dropout_module.kept(1, 2, 0, rows, 64, 256, p)
        assert abs(mask.mean() - (1 - p)) < 0.01
    base = dropout_module.kept(1, 2, 0, rows, 8, 64, 0.5)
    for other in (
        dropout_module.kept(2, 2, 0, rows, 8, 64, 0.5),  # seed
        dropout_module.kept(1, 3, 0, rows, 8, 64, 0.5),  # step
        dropout_module.kept(1, 2, 1, rows, 8, 64, 0.5),  # layer
        dropout_module.kept(1, 2, 0, rows + 1, 8, 64, 0.5),
    ):  # row
        assert 0.4 < (other == base).mean() < 0.6
    assert 0.4 < (base[:, 1:] == base[:, :-1]).mean() < 0.6  # t
    assert 0.4 < (base[:, :, 1:] == base[:, :, :-1]).mean() < 0.6  # unit
    assert dropout_module.kept(1, 2, 0, rows, 8, 64, 0.0).all()


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_only_in_loss_and_grad(cell):
    """loss() never drops; loss_and_grad drops with masks from (seed, step), and with dropout 0
    ignores them."""
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float64)
    plain = Kernels(spec, BATCH, SEQ, np.float64)
    dropping = Kernels(spec, BATCH, SEQ, np.float64, dropout=0.5)
    assert dropping.loss(params, inputs, targets, state0) == plain.loss(params, inputs, targets, state0)
    grads = params.zeros_like()
    base = plain.loss_and_grad(params, inputs, targets, state0, grads, seed=1, step=1)
    assert plain.loss_and_grad(params, inputs, targets, state0, grads, seed=2, step=5) == base
    a = dropping.loss_and_grad(params, inputs, targets, state0, grads, seed=1, step=1)
    b = dropping.loss_and_grad(params, inputs, targets, state0, grads, seed=1, step=2)
    c = dropping.loss_and_grad(params, inputs, targets, state0, grads, seed=1, step=1)
    assert a != base and a != b and a == c
    # The recurrent state is never dropped: layer 0's state_last (whose input is the character)
    # is the undropped one; layer 1 reads layer 0's output after dropout.
    np.testing.assert_array_equal(dropping.state_last[:, 0], plain.state_last[:, 0])
    assert np.abs(dropping.state_last[:, 1] - plain.state_last[:, 1]).max() > 1e-3


# -- fast math -------------------------------------------------------------------------------------


def test_fast_float32_math_is_accurate():
    x = np.linspace(-12.0, 12.0, 20001).astype(np.float32)
    for value in x[::7]:
        exact = np.float64(value)
        assert abs(float(fast_tanh(value)) - np.tanh(exact)) < 3e-7, value
        assert abs(float(fast_sigmoid(value)) - 1 / (1 + np.exp(-exact))) < 3e-7, value
        assert isinstance(fast_tanh(value), np.float32)
    for value in x[np.abs(x) < 0.5][::5]:
        if value != 0:
            assert abs(float(fast_tanh(value)) / np.tanh(np.float64(value)) - 1) < 2e-6, value
    # exp's documented bound. 2.9e-7 near -87 (4e-6 without FMA) while LLVM could merge its two
    # constants for ln 2 back into one ("reassoc"; charrnn.kernels.fastmath.FASTMATH_ORDERED).
    for value in np.linspace(-87.0, 88.0, 3001).astype(np.float32):
        assert abs(float(fast_exp(value)) / np.exp(np.float64(value)) - 1) < 2e-7, value
    assert fast_tanh(0.5) == pytest.approx(np.tanh(0.5), rel=1e-15)
    assert fast_exp(np.float64(1.5)) == pytest.approx(np.exp(1.5), rel=1e-15)


def test_fast_math_keeps_nan():
    for f in (fast_exp, fast_tanh, fast_sigmoid):
        assert np.isnan(f(np.float32(np.nan))) and np.isnan(f(np.float64(np.nan))), f.__name__


def run_in_subprocess(env_changes, calls):
    """Run test functions of this module in a fresh interpreter with some environment changed."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = "\n".join(
        ["import sys, numpy as np", f"sys.path[:0] = [{tests_dir!r}, {os.path.dirname(tests_dir)!r}]"] + calls
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=dict(os.environ, **env_changes), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_fastmath_alone_and_without_the_jit():
    """The sampler imports charrnn.kernels.fastmath alone (no BLAS binding) and runs it as plain
    Python under NUMBA_DISABLE_JIT=1: the same approximation as compiled (to rounding)."""
    values = "np.linspace(-30, 30, 2001).astype(np.float32)"
    script = [
        "import charrnn.kernels.fastmath as fm",
        "assert 'charrnn.kernels.blas' not in sys.modules, sorted(sys.modules)",
        f"x = {values}",
        "print(repr([[float(f(v)) for v in x] for f in (fm.fast_exp, fm.fast_tanh, fm.fast_sigmoid)]))",
    ]
    compiled = eval(run_in_subprocess({}, script))
    python = eval(run_in_subprocess({"NUMBA_DISABLE_JIT": "1"}, script))
    for a, b in zip(compiled, python, strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=3e-7, atol=1e-37)


# -- edges -----------------------------------------------------------------------------------------


def test_chunk_threads_hand_errors_to_the_caller():
    threads = ChunkThreads(2, 3)

    def task(w):
        if w == 1:
            raise ZeroDivisionError("chunk 1")
        return float(w)

    with pytest.raises(ZeroDivisionError):
        threads.run(task)
    assert threads.run(lambda w: 10.0**w) == 111.0  # usable afterwards, all chunks run
    threads.close()


def test_chunk_threads_wait_for_workers_when_interrupted():
    """Ctrl-C while the caller waits: run() raises only after the worker's chunk is done."""
    threads = ChunkThreads(2, 2)
    worker_started, caller_done, delivered = (threading.Event() for _ in range(3))
    finished = []

    def on_sigint(signum, frame):
        if not delivered.is_set():  # one Ctrl-C, however many signals it took
            delivered.set()
            raise KeyboardInterrupt

    def task(w):
        if threading.current_thread() is threading.main_thread():
            worker_started.wait(60)  # leave the other chunk to the worker
            caller_done.set()
            return 1.0
        worker_started.set()
        caller_done.wait(60)
        # Ctrl-C once the caller waits for this chunk, and this chunk ends after the caller got
        # it. A signal that comes just before the caller blocks in a lock's wait is handled only
        # when the wait ends (CPython), so it is sent again until the handler has run.
        while not delivered.is_set():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            delivered.wait(0.05)
        time.sleep(0.3)  # (a run() that did not wait would be back by now)
        finished.append(w)
        return 1.0

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            threads.run(task)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert delivered.is_set() and finished == [1]
    assert threads.run(lambda w: 1.0) == 2.0
    threads.close()


def test_softmax_survives_large_logits():
    spec, params, inputs, targets, state0 = make_case("lstm", 1, np.float32)
    params.b_y[...] = np.float32(80.0) * np.arange(VOCAB, dtype=np.float32)
    kernels = Kernels(spec, BATCH, SEQ, np.float32)
    grads = params.zeros_like()
    loss = kernels.loss_and_grad(params, inputs, targets, state0, grads)
    ref_loss = reference_result(spec, params, inputs, targets, state0)[0]
    assert np.isfinite(loss) and loss == pytest.approx(ref_loss, rel=1e-5)
    assert np.all(np.isfinite(grads.flat))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("where", ["W.0", "b.1", "state0"])
def test_nan_stays_visible(cell, where):
    spec, params, inputs, targets, state0 = make_case(cell, 2, np.float32, hidden=VECTOR_HIDDEN)
    if where == "state0":
        state0[0, 0, -1, 0] = np.nan
    else:
        params[where].flat[0] = np.nan
    kernels = Kernels(spec, BATCH, SEQ, np.float32)
    assert np.isnan(kernels.loss_and_grad(params, inputs, targets, state0, params.zeros_like()))
    assert np.isnan(kernels.loss(params, inputs, targets, state0))


def test_bad_arguments_raise_value_error():
    spec, params, inputs, targets, state0 = make_case("gru", 2, np.float32)
    kernels = Kernels(spec, BATCH, SEQ, np.float32)
    grads = params.zeros_like()
    other = ModelSpec("lstm", 2, HIDDEN, VOCAB)
    bad_calls = {
        "float inputs": (params, inputs.astype(np.float32), targets, state0, grads),
        "list inputs": (params, inputs.tolist(), targets, state0, grads),
        "1-d inputs": (params, inputs[0], targets[0], state0, grads),
        "wrong batch": (params, inputs[:2], targets[:2], state0, grads),
        "too long": (params, np.zeros((BATCH, SEQ + 1), np.int32), np.zeros((BATCH, SEQ + 1), np.int32), state0, grads),
        "empty window": (params, inputs[:, :0], targets[:, :0], state0, grads),
        "shape mismatch": (params, inputs, targets[:, :2], state0, grads),
        "id too large": (params, inputs + VOCAB, targets, state0, grads),
        "negative id": (params, inputs, -targets, state0, grads),
        "state0 dtype": (params, inputs, targets, state0.astype(np.float64), grads),
        "state0 shape": (params, inputs, targets, state0[:, :1], grads),
        "state0 of h only": (params, inputs, targets, state0[:, :, 0], grads),
        "params dtype": (params.astype(np.float64), inputs, targets, state0, grads),
        "grads dtype": (params, inputs, targets, state0, grads.astype(np.float64)),
        "params of another cell": (Params(other), inputs, targets, state0, grads),
        "params of another size": (Params(ModelSpec("gru", 2, HIDDEN, VOCAB + 1)), inputs, targets, state0, grads),
        "grads of another model": (params, inputs, targets, state0, Params(ModelSpec("gru", 1, HIDDEN, VOCAB))),
        "grads is params": (params, inputs, targets, state0, params),
        "not params": (params.arrays(), inputs, targets, state0, grads),
    }
    for what, args in bad_calls.items():
        with pytest.raises(ValueError):
            kernels.loss_and_grad(*args)
            pytest.fail(what)
        if not what.startswith("grads"):
            with pytest.raises(ValueError):
                kernels.loss(*args[:4])
    for kwargs in ({"seed": 1.5}, {"step": -1}, {"step": "3"}):
        with pytest.raises(ValueError):
            kernels.loss_and_grad(params, inputs, targets, state0, grads, **kwargs)
    for kwargs in (
        {"dtype": np.float16},
        {"threads": 0},
        {"batch_size": 2.0},
        {"seq_length": True},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"spec": "lstm"},
    ):
        args = dict(spec=spec, batch_size=BATCH, seq_length=SEQ)
        args.update(kwargs)
        with pytest.raises(ValueError):
            Kernels(**args)


@pytest.mark.slow
def test_kernels_compiled_without_avx512():
    """Compiled for a CPU without AVX-512 (Haswell, with its own features: without
    NUMBA_CPU_FEATURES Numba keeps the host's) the recurrent step goes through OpenBLAS."""
    run_in_subprocess(
        {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""},
        [
            "import test_kernels as t",
            "from charrnn.kernels import stepgemm",
            "assert not stepgemm.AVX512",
            "for cell in t.CELLS:",
            "    t.test_matches_numpy_reference(cell, np.float32, 2, 2, 0.5, t.VECTOR_HIDDEN)",
            "    t.test_matches_numpy_reference(cell, np.float64, 1, 2, 0.0, t.VECTOR_HIDDEN)",
            "    t.test_validation_with_batch_one(cell)",
        ],
    )


def test_fallback_blas_matches_reference():
    """Where numpy's BLAS is not an ILP64 OpenBLAS the kernels call a fallback under the same
    symbol; the cached kernels must give the same results through it."""
    run_in_subprocess(
        {"CHARRNN_BLAS": "fallback"},
        [
            "import test_kernels as t",
            "from charrnn.kernels import blas",
            "assert blas.BLAS_BACKEND.startswith('fallback'), blas.BLAS_BACKEND",
            "t.test_matches_numpy_reference('lstm', np.float64, 2, 2, 0.5, t.HIDDEN)",
            "t.test_matches_numpy_reference('gru', np.float32, 1, 1, 0.0, t.VECTOR_HIDDEN)",
        ],
    )
