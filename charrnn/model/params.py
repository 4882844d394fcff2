"""The model's parameters: one flat buffer with named views into it, laid out by a ModelSpec.

A flat buffer lets the optimizer, the gradient clip and the checkpoint treat every array as one,
while kernels and people see `U.0`, `W.0`, `b.0`, ..., `V`, `b_y` (see charrnn.model.spec).
"""

from __future__ import annotations

import numpy as np

from charrnn.model.spec import ModelSpec


class Params:
    """C-contiguous views into `flat` (which owns the memory), one per array of `spec`:
    `params["W.1"]`, and `params.V`, `params.b_y` for the output layer."""

    def __init__(self, spec: ModelSpec, dtype=np.float32, flat: np.ndarray | None = None):
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
        self.spec = spec
        size = spec.n_params
        if flat is None:
            flat = np.zeros(size, dtype=dtype)
        if flat.shape != (size,) or not flat.flags.c_contiguous:
            raise ValueError(f"flat buffer must be contiguous of shape ({size},), got {flat.shape}")
        self.flat = flat
        shapes = spec.array_shapes()
        self._views = {name: flat[start:stop].reshape(shapes[name]) for name, (start, stop) in spec.offsets().items()}

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def names(self) -> list[str]:
        return list(self._views)

    @property
    def V(self) -> np.ndarray:
        return self._views["V"]

    @property
    def b_y(self) -> np.ndarray:
        return self._views["b_y"]

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def hidden(self) -> int:
        return self.spec.hidden

    @property
    def dtype(self) -> np.dtype:
        return self.flat.dtype

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self._views)

    def zeros_like(self) -> Params:
        return Params(self.spec, self.dtype)

    def copy(self) -> Params:
        return Params(self.spec, flat=self.flat.copy())

    def astype(self, dtype) -> Params:
        return Params(self.spec, flat=self.flat.astype(dtype))

    @classmethod
    def from_arrays(cls, spec: ModelSpec, arrays: dict[str, np.ndarray], dtype=np.float32) -> Params:
        """Build from named arrays; ValueError (one line) if a name is missing or a shape is off.
        Arrays not in the spec are refused too, so a file of another layout is never half-read."""
        shapes = spec.array_shapes()
        missing = [n for n in shapes if n not in arrays]
        if missing:
            raise ValueError(f"missing arrays: {', '.join(missing)}")
        extra = sorted(set(arrays) - set(shapes))
        if extra:
            raise ValueError(f"arrays not in a {spec.describe()} model: {', '.join(extra)}")
        params = cls(spec, dtype)
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {shape}")
            params[name][...] = arrays[name]
        return params


def init_params(spec: ModelSpec, rng: np.random.Generator, dtype=np.float32, input_scale: float = 0.5) -> Params:
    """Random initial weights.

    `U.0` is drawn with standard deviation `input_scale`, so that a character moves the state from
    the first step (PyTorch's default, U(+-1/sqrt(H)), leaves a one-hot input almost silent and
    trains slowly); every other matrix uses U(+-1/sqrt(H)); biases start at zero, except the LSTM's
    forget block, which starts at 1 (remember by default).
    """
    params = Params(spec, dtype)
    bound = 1.0 / np.sqrt(spec.hidden)
    H = spec.hidden
    for name, array in params.arrays().items():
        if name == "U.0":
            array[...] = rng.normal(0.0, input_scale, size=array.shape)
        elif array.ndim == 2:
            array[...] = rng.uniform(-bound, bound, size=array.shape)
        elif spec.cell == "lstm" and name.startswith("b."):
            array[H : 2 * H] = 1.0
    return params
