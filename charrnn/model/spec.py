"""The model's shape, in one object: cell, layers, hidden units, vocabulary.

Params, kernels, checkpoint, sampler and CLI read it rather than each knowing the layout.

A layer of H units has G gate blocks (rnn 1, gru 3, lstm 4), in row-vector notation (a one-hot
x picks a row of U):
    rnn:  h_t = tanh(x U + h_{t-1} W + b)
    lstm: a = x U + h_{t-1} W + b, blocks [i, f, g, o]; i, f, o = sigmoid, g = tanh;
          c_t = f*c_{t-1} + i*g;  h_t = o*tanh(c_t)
    gru:  a_x = x U + b, a_h = h_{t-1} W, blocks [r, z, n];
          r = sigmoid(a_x[r] + a_h[r]), z = sigmoid(a_x[z] + a_h[z]),
          n = tanh(a_x[n] + r*(a_h[n] + b_hn));  h_t = (1-z)*n + z*h_{t-1}
Layer 0 reads the one-hot character, layer l >= 1 reads layer l-1's h_t, and
y_t = softmax(h_t V + b_y) reads the last layer's.

Arrays (model.npz, format 2, and the order of the flat parameter buffer):
    U.0 (vocab, G*H), W.0 (H, G*H), b.0 (G*H,), [b_hn.0 (H,) for gru],
    U.l (H, G*H), W.l, b.l, [b_hn.l]   for l = 1 .. layers-1,
    V (H, vocab), b_y (vocab,).
The recurrent state of a batch is one float array of shape (batch, layers, K, H): K = 2 for lstm
(h then c), 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charrnn.errors import ModelFormatError

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CELLS = tuple(GATES)
CELL_NAMES = {"rnn": "vanilla RNN", "gru": "GRU", "lstm": "LSTM"}
# Bounds on a model's shape: far past what trains on a CPU, short of what a meta.json could ask
# for to exhaust memory (an LSTM of 16,384 units holds 2^32 weights in a layer's W alone).
LIMITS = {"layers": 64, "hidden": 16384, "vocab_size": 0x110000}  # vocab: every code point


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class ModelSpec:
    cell: str
    layers: int
    hidden: int
    vocab_size: int

    def __post_init__(self) -> None:
        if self.cell not in GATES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("layers", "hidden", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {_shown(value)}")
            if value > LIMITS[name]:
                raise ValueError(f"{name} {value} is over charrnn's limit of {LIMITS[name]}")

    @property
    def gates(self) -> int:
        """G: gate blocks per layer."""
        return GATES[self.cell]

    @property
    def state_kinds(self) -> int:
        """K: vectors of state per layer (lstm: h and c)."""
        return 2 if self.cell == "lstm" else 1

    @property
    def cell_code(self) -> int:
        """The cell as a small integer for compiled kernels: rnn 0, gru 1, lstm 2."""
        return CELLS.index(self.cell)

    def state_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, self.layers, self.state_kinds, self.hidden)

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter array, in the order of the flat buffer."""
        G, H, V = self.gates, self.hidden, self.vocab_size
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.layers):
            shapes[f"U.{layer}"] = (V if layer == 0 else H, G * H)
            shapes[f"W.{layer}"] = (H, G * H)
            shapes[f"b.{layer}"] = (G * H,)
            if self.cell == "gru":
                shapes[f"b_hn.{layer}"] = (H,)
        shapes["V"] = (H, V)
        shapes["b_y"] = (V,)
        return shapes

    def offsets(self) -> dict[str, tuple[int, int]]:
        """(start, stop) of every array in the flat buffer."""
        out, position = {}, 0
        for name, shape in self.array_shapes().items():
            size = 1
            for n in shape:
                size *= n
            out[name] = (position, position + size)
            position += size
        return out

    @property
    def n_params(self) -> int:
        return next(reversed(self.offsets().values()))[1]

    def input_span(self) -> tuple[int, int]:
        """Where U.0 lies in the flat buffer: its rows are updated only when their character
        occurs, so training gives it a learning rate of its own."""
        return self.offsets()["U.0"]

    def describe(self) -> str:
        layers = f"{self.layers} layers" if self.layers > 1 else "1 layer"
        return f"{CELL_NAMES[self.cell]}, {layers} of {self.hidden} units"

    def to_meta(self) -> dict[str, str | int]:
        return {"cell": self.cell, "layers": self.layers, "hidden": self.hidden, "vocab_size": self.vocab_size}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: str = "meta.json") -> ModelSpec:
        """The spec a format-2 meta.json records; ModelFormatError (one line) if it is off."""
        try:
            return cls(meta["cell"], meta["layers"], meta["hidden"], meta["vocab_size"])
        except KeyError as error:
            raise ModelFormatError(f"{where}: missing {error.args[0]!r}") from None
        except ValueError as error:
            raise ModelFormatError(f"{where}: {error}") from None
