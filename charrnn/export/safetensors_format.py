"""`charrnn export MODEL --format safetensors`: the weights under PyTorch's names
(charrnn.export.torch_names), written with the safetensors package's NumPy API (no PyTorch
needed), and the model's description in the file's metadata (string to string):

    format "charrnn-safetensors", cell, layers, hidden, vocab_size (as decimal strings),
    vocab: a JSON list of the characters (index i is output column i and input column i)
    torch_module: nn.RNN, nn.GRU or nn.LSTM; prefixes: "rnn." and "output."
"""

from __future__ import annotations

import json
from pathlib import Path

from charrnn.atomic import atomic_write
from charrnn.export.torch_names import OUTPUT_PREFIX, RNN_PREFIX, torch_arrays

MODULES = {"rnn": "nn.RNN", "gru": "nn.GRU", "lstm": "nn.LSTM"}


def metadata(model) -> dict[str, str]:
    spec = model.spec
    return {
        "format": "charrnn-safetensors",
        "cell": spec.cell,
        "layers": str(spec.layers),
        "hidden": str(spec.hidden),
        "vocab_size": str(spec.vocab_size),
        "vocab": json.dumps(list(model.vocab.chars)),
        "torch_module": MODULES[spec.cell],
        "rnn_prefix": RNN_PREFIX,
        "output_prefix": OUTPUT_PREFIX,
        "best_val_bpc": json.dumps(model.meta.get("best_val_bpc")),
    }


def write(model, out) -> None:
    from safetensors.numpy import save

    atomic_write(Path(out), save(torch_arrays(model.params), metadata=metadata(model)))
