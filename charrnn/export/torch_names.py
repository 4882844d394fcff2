"""charrnn's arrays under PyTorch's names: the README's mapping, read backwards.

For layer l of an nn.RNN / nn.GRU / nn.LSTM (the same gate order as charrnn: lstm i, f, g, o;
gru r, z, n): weight_ih_l{l} = U.l.T, weight_hh_l{l} = W.l.T, bias_ih_l{l} = b.l and
bias_hh_l{l} = 0, except GRU's n block, where bias_hh_l{l}[2H:] = b_hn.l (the reset gate
multiplies h W + b_hn). The output is an nn.Linear(H, vocab): weight = V.T, bias = b_y.
"""

from __future__ import annotations

import numpy as np

from charrnn.model.params import Params

RNN_PREFIX = "rnn."  # the nn.RNN / nn.GRU / nn.LSTM's state dict
OUTPUT_PREFIX = "output."  # the nn.Linear's


def torch_arrays(params: Params) -> dict[str, np.ndarray]:
    """Float32, C-contiguous arrays named as PyTorch's state dicts name them, with the prefixes
    above."""
    spec = params.spec
    H = spec.hidden
    out = {}
    for layer in range(spec.layers):
        b = params[f"b.{layer}"]
        b_hh = np.zeros_like(b)
        if spec.cell == "gru":
            b_hh[2 * H :] = params[f"b_hn.{layer}"]
        for name, array in (
            (f"weight_ih_l{layer}", params[f"U.{layer}"].T),
            (f"weight_hh_l{layer}", params[f"W.{layer}"].T),
            (f"bias_ih_l{layer}", b),
            (f"bias_hh_l{layer}", b_hh),
        ):
            out[RNN_PREFIX + name] = np.ascontiguousarray(array, dtype=np.float32)
    out[OUTPUT_PREFIX + "weight"] = np.ascontiguousarray(params.V.T, dtype=np.float32)
    out[OUTPUT_PREFIX + "bias"] = np.ascontiguousarray(params.b_y, dtype=np.float32)
    return out
