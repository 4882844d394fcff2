"""Optimizers over the flat parameter buffer, and the global gradient-norm clip.

Each update is one Numba loop over the whole buffer; the optimizer's moments are flat arrays too,
so the checkpoint saves and restores them by name.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from charrnn.kernels.fastmath import FAST

OPTIMIZERS = ("adam", "rmsprop", "adagrad")
# FAST (charrnn.kernels.fastmath): error_model="numpy" drops the zero-division check that keeps a
# loop with a division scalar; "reassoc" lets the float64 sum of squares use vector lanes (in the same
# order every run).
_FAST = FAST


@njit(cache=True, **_FAST)
def _adam_update(p, g, m, v, lr, beta1, beta2, eps):
    one = p.dtype.type(1.0)
    for i in range(p.size):
        m[i] = beta1 * m[i] + (one - beta1) * g[i]
        v[i] = beta2 * v[i] + (one - beta2) * g[i] * g[i]
        p[i] -= lr * m[i] / (np.sqrt(v[i]) + eps)


@njit(cache=True, **_FAST)
def _rmsprop_update(p, g, v, lr, decay, eps):
    one = p.dtype.type(1.0)
    for i in range(p.size):
        v[i] = decay * v[i] + (one - decay) * g[i] * g[i]
        p[i] -= lr * g[i] / (np.sqrt(v[i]) + eps)


@njit(cache=True, **_FAST)
def _adagrad_update(p, g, v, lr, eps):
    for i in range(p.size):
        v[i] += g[i] * g[i]
        p[i] -= lr * g[i] / (np.sqrt(v[i]) + eps)


@njit(cache=True, **_FAST)
def _sum_squares(g):
    total = 0.0  # float64 accumulator: a float32 sum over millions of terms drifts
    for i in range(g.size):
        total += float(g[i]) * float(g[i])
    return total


def clip_grad_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale `grads` in place so their global L2 norm is at most `max_norm`; return the norm before."""
    norm = math.sqrt(_sum_squares(grads))
    if max_norm > 0 and norm > max_norm:
        grads *= grads.dtype.type(max_norm / (norm + 1e-6))
    return norm


class Optimizer:
    """Adam (with bias correction), RMSprop or Adagrad; `state` holds every array it needs to resume."""

    def __init__(
        self,
        name: str,
        size: int,
        dtype=np.float32,
        beta1=0.9,
        beta2=0.999,
        decay=0.95,
        eps=1e-8,
        lr_scales: tuple[tuple[int, int, float], ...] = (),
    ):
        """`lr_scales`: (start, stop, factor) ranges of the flat buffer whose learning rate is scaled."""
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
        self.name = name
        self.dtype = np.dtype(dtype)
        self.beta1, self.beta2, self.decay, self.eps = beta1, beta2, decay, eps
        self.steps = 0
        self.segments = self._segments(size, lr_scales)
        self.state = {"v": np.zeros(size, dtype=dtype)}
        if name == "adam":
            self.state["m"] = np.zeros(size, dtype=dtype)

    @staticmethod
    def _segments(size, lr_scales):
        """Contiguous (start, stop, factor) ranges covering the whole buffer."""
        segments, position = [], 0
        for start, stop, factor in sorted(lr_scales):
            if start < position or stop > size or start >= stop:
                raise ValueError(f"bad learning-rate range {start}:{stop}")
            if start > position:
                segments.append((position, start, 1.0))
            segments.append((start, stop, float(factor)))
            position = stop
        if position < size:
            segments.append((position, size, 1.0))
        return segments

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        self.steps += 1
        f = self.dtype.type
        v, m = self.state["v"], self.state.get("m")
        for start, stop, factor in self.segments:
            part = slice(start, stop)
            rate = lr * factor
            if self.name == "adam":
                assert m is not None  # adam keeps both moments
                # Fold the bias corrections into the step size and epsilon (the usual rewriting).
                c1 = 1.0 - self.beta1**self.steps
                c2 = 1.0 - self.beta2**self.steps
                _adam_update(
                    params[part],
                    grads[part],
                    m[part],
                    v[part],
                    f(rate * math.sqrt(c2) / c1),
                    f(self.beta1),
                    f(self.beta2),
                    f(self.eps * math.sqrt(c2)),
                )
            elif self.name == "rmsprop":
                _rmsprop_update(params[part], grads[part], v[part], f(rate), f(self.decay), f(self.eps))
            else:
                _adagrad_update(params[part], grads[part], v[part], f(rate), f(self.eps))

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"opt_{k}": v for k, v in self.state.items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], steps: int) -> None:
        for key in self.state:
            saved = arrays[f"opt_{key}"]
            if saved.shape != self.state[key].shape:
                raise ValueError(f"optimizer state {key} has shape {saved.shape}")
            self.state[key][...] = saved
        self.steps = steps
