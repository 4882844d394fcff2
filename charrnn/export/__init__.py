"""Exports of a charrnn model to other tools (`charrnn export`):

    safetensors   the weights under PyTorch's names (nn.RNN / nn.GRU / nn.LSTM and an nn.Linear
                  output), the vocabulary in the file's metadata         (charrnn.export.safetensors)
    onnx          a one-step model on ONNX's RNN / GRU / LSTM operators  (charrnn.export.onnx)
    html          one self-contained web page that writes text and scores it (charrnn.export.html)

The heavy libraries (onnx, safetensors; onnxruntime for checking) are the optional extra
`charrnn[export]`; `require` names what is missing in one line.
"""

from __future__ import annotations

import importlib

from charrnn.errors import InputError

FORMATS = ("onnx", "safetensors", "html")
INSTALL = 'pip install "charrnn[export]"'
NEEDS = {"onnx": ("onnx",), "safetensors": ("safetensors",), "html": ()}


def require(fmt: str) -> None:
    """InputError (one line, saying what to install) if a format's libraries are missing."""
    missing = []
    for name in NEEDS[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise InputError(
            f"export to {fmt} needs {' and '.join(missing)}: {INSTALL} (or pip install {' '.join(missing)})"
        )


def export(model, fmt: str, out) -> None:
    """Write `model` (a charrnn Model) to `out` in format `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    require(fmt)
    module = importlib.import_module(f"charrnn.export.{fmt}_format")
    module.write(model, out)
