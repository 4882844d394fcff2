import numpy as np
import pytest

from charrnn.training.optim import Optimizer, clip_grad_norm


def numpy_adam(p, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """The textbook Adam with bias-corrected moments."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
    return p


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_updates_match_their_textbook_form(name):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=50)
    grads = [rng.normal(size=50) for _ in range(5)]
    opt = Optimizer(name, 50, np.float64)
    p = p0.copy()
    for g in grads:
        opt.step(p, g.copy(), 0.01)
    if name == "adam":
        expected = numpy_adam(p0, grads, 0.01)
    elif name == "rmsprop":
        v, expected = np.zeros(50), p0.copy()
        for g in grads:
            v = 0.95 * v + 0.05 * g * g
            expected -= 0.01 * g / (np.sqrt(v) + 1e-8)
    else:
        v, expected = np.zeros(50), p0.copy()
        for g in grads:
            v += g * g
            expected -= 0.01 * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(p, expected, rtol=1e-10, atol=1e-12)


def test_float32_adam_stays_float32_and_matches_float64():
    rng = np.random.default_rng(1)
    p64 = rng.normal(size=100)
    p32 = p64.astype(np.float32)
    o64, o32 = Optimizer("adam", 100, np.float64), Optimizer("adam", 100, np.float32)
    for _ in range(3):
        g = rng.normal(size=100)
        o64.step(p64, g, 1e-3)
        o32.step(p32, g.astype(np.float32), 1e-3)
    assert p32.dtype == np.float32 and o32.state["m"].dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-6)


def test_clip_scales_to_the_max_norm_and_leaves_small_gradients_alone():
    g = np.array([3.0, 4.0], dtype=np.float32)
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-5)
    small = np.array([0.3, 0.4])
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small, [0.3, 0.4])


def test_state_round_trips_for_resume():
    rng = np.random.default_rng(2)
    a, b = Optimizer("adam", 10), Optimizer("adam", 10)
    pa = rng.normal(size=10).astype(np.float32)
    g = rng.normal(size=10).astype(np.float32)
    a.step(pa, g, 0.1)
    pb = pa.copy()
    b.load_state_arrays({k: v.copy() for k, v in a.state_arrays().items()}, a.steps)
    a.step(pa, g, 0.1)
    b.step(pb, g, 0.1)
    np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_a_scaled_range_steps_like_its_own_optimizer_with_the_scaled_rate(name):
    rng = np.random.default_rng(3)
    p = rng.normal(size=30)
    scaled = Optimizer(name, 30, np.float64, lr_scales=((0, 10, 30.0),))
    head, tail = Optimizer(name, 10, np.float64), Optimizer(name, 20, np.float64)
    p_head, p_tail = p[:10].copy(), p[10:].copy()
    for _ in range(3):
        g = rng.normal(size=30)
        scaled.step(p, g.copy(), 0.01)
        head.step(p_head, g[:10].copy(), 0.3)
        tail.step(p_tail, g[10:].copy(), 0.01)
    np.testing.assert_allclose(p, np.concatenate([p_head, p_tail]), rtol=1e-12)


def test_overlapping_or_outside_ranges_are_refused():
    with pytest.raises(ValueError):
        Optimizer("adam", 10, lr_scales=((0, 5, 2.0), (3, 8, 2.0)))
    with pytest.raises(ValueError):
        Optimizer("adam", 10, lr_scales=((5, 12, 2.0),))
