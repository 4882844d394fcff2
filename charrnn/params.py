"""The model's parameters: one flat buffer with named views into it, laid out by a ModelSpec.

A flat buffer lets the optimizer, the gradient clip and the checkpoint treat every array as one,
while kernels and people see `U.0`, `W.0`, `b.0`, ..., `V`, `b_y` (see charrnn.spec).
"""

from __future__ import annotations

import numpy as np

from charrnn.spec import ModelSpec

# The arrays of a format-1 model (a one-layer vanilla RNN) and their format-2 names.
FORMAT1_NAMES = {"U": "U.0", "W": "W.0", "b_h": "b.0", "V": "V", "b_y": "b_y"}


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
        self._views = {name: flat[start:stop].reshape(shapes[name])
                       for name, (start, stop) in spec.offsets().items()}

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

    def zeros_like(self) -> "Params":
        return Params(self.spec, self.dtype)

    def copy(self) -> "Params":
        return Params(self.spec, flat=self.flat.copy())

    def astype(self, dtype) -> "Params":
        return Params(self.spec, flat=self.flat.astype(dtype))

    @classmethod
    def from_arrays(cls, spec: ModelSpec, arrays: dict[str, np.ndarray], dtype=np.float32) -> "Params":
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

    @classmethod
    def from_format1(cls, arrays: dict[str, np.ndarray], dtype=np.float32) -> "Params":
        """A format-1 model (U, W, V, b_h, b_y of a one-layer vanilla RNN) in today's layout."""
        missing = [n for n in FORMAT1_NAMES if n not in arrays]
        if missing:
            raise ValueError(f"missing arrays: {', '.join(missing)}")
        if arrays["U"].ndim != 2:
            raise ValueError(f"U has shape {arrays['U'].shape}, expected (vocab, hidden)")
        vocab_size, hidden = (int(n) for n in arrays["U"].shape)
        spec = ModelSpec("rnn", 1, hidden, vocab_size)
        return cls.from_arrays(spec, {new: arrays[old] for old, new in FORMAT1_NAMES.items()}, dtype)


def format1_flat_order(spec: ModelSpec) -> np.ndarray:
    """Indices that put a format-1 flat buffer (a one-layer vanilla RNN's U, W, V, b_h, b_y, in
    that order: charrnn 0.1's training states and optimizer moments) into this layout's order."""
    V, H = spec.vocab_size, spec.hidden
    starts, position = {}, 0
    for name, size in (("U", V * H), ("W", H * H), ("V", H * V), ("b_h", H), ("b_y", V)):
        starts[name] = position
        position += size
    offsets = spec.offsets()
    order = np.empty(spec.n_params, dtype=np.int64)
    for old, new in FORMAT1_NAMES.items():
        start, stop = offsets[new]
        order[start:stop] = np.arange(starts[old], starts[old] + stop - start)
    return order


def init_params(spec: ModelSpec, rng: np.random.Generator, dtype=np.float32,
                input_scale: float = 0.5) -> Params:
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
            array[H:2 * H] = 1.0
    return params
