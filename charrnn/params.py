"""The model's parameters: one flat buffer with named views into it.

A flat buffer lets the optimizer, the gradient clip and the checkpoint treat all five arrays as
one, while the kernels see `U`, `W`, `V`, `b_h` and `b_y` in the notation of the model:
    h_t = tanh(x_t U + h_{t-1} W + b_h),   p_t = softmax(h_t V + b_y)
"""

from __future__ import annotations

import numpy as np

PARAM_NAMES = ("U", "W", "V", "b_h", "b_y")


def param_shapes(vocab_size: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "U": (vocab_size, hidden),
        "W": (hidden, hidden),
        "V": (hidden, vocab_size),
        "b_h": (hidden,),
        "b_y": (vocab_size,),
    }


class Params:
    """`U` (vocab, hidden), `W` (hidden, hidden), `V` (hidden, vocab), `b_h` (hidden), `b_y` (vocab):
    C-contiguous views into `flat`, which owns the memory."""

    def __init__(self, vocab_size: int, hidden: int, dtype=np.float32, flat: np.ndarray | None = None):
        self.vocab_size = int(vocab_size)
        self.hidden = int(hidden)
        shapes = param_shapes(self.vocab_size, self.hidden)
        size = sum(int(np.prod(s)) for s in shapes.values())
        if flat is None:
            flat = np.zeros(size, dtype=dtype)
        if flat.shape != (size,) or not flat.flags.c_contiguous:
            raise ValueError(f"flat buffer must be contiguous of shape ({size},), got {flat.shape}")
        self.flat = flat
        offset = 0
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            setattr(self, name, flat[offset:offset + n].reshape(shape))
            offset += n

    @property
    def dtype(self) -> np.dtype:
        return self.flat.dtype

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def zeros_like(self) -> "Params":
        return Params(self.vocab_size, self.hidden, self.dtype)

    def copy(self) -> "Params":
        return Params(self.vocab_size, self.hidden, flat=self.flat.copy())

    def astype(self, dtype) -> "Params":
        return Params(self.vocab_size, self.hidden, flat=self.flat.astype(dtype))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], dtype=None) -> "Params":
        """Build from named arrays; raises ValueError if a name is missing or a shape is off."""
        missing = [n for n in PARAM_NAMES if n not in arrays]
        if missing:
            raise ValueError(f"missing arrays: {', '.join(missing)}")
        vocab_size, hidden = arrays["U"].shape
        dtype = np.dtype(dtype or arrays["U"].dtype)
        params = cls(vocab_size, hidden, dtype)
        for name, shape in param_shapes(vocab_size, hidden).items():
            if arrays[name].shape != shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {shape}")
            getattr(params, name)[...] = arrays[name]
        return params


def init_params(vocab_size: int, hidden: int, rng: np.random.Generator, dtype=np.float32,
                input_scale: float = 0.5) -> Params:
    """Random initial weights.

    `U` is drawn with standard deviation `input_scale`, so that a character moves the hidden state
    from the first step (PyTorch's default, U(+-1/sqrt(H)), leaves its input almost silent and
    trains slowly); `W` and `V` use U(+-1/sqrt(H)); the biases start at zero.
    """
    params = Params(vocab_size, hidden, dtype)
    bound = 1.0 / np.sqrt(hidden)
    params.U[...] = rng.normal(0.0, input_scale, size=params.U.shape)
    params.W[...] = rng.uniform(-bound, bound, size=params.W.shape)
    params.V[...] = rng.uniform(-bound, bound, size=params.V.shape)
    return params
