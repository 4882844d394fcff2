"""`charrnn export MODEL --format html`: one self-contained web page that writes text with the
model in the browser (prime, length, temperature, top-k, top-p, seed, as `charrnn sample`),
streaming the characters as they come, and that scores text for scripts:

    window.charrnn.logProbs(text)   per-character log2-probabilities: entry t is
                                    log2 p(text[t+1] | text[0..t]), the state starting at zero
    window.charrnn.generate({prime, length, temperature, topK, topP, seed, onText})
                                    a Promise of {text, seed, chars, seconds, stopped}

The weights are embedded as base64 of the float32 flat buffer (charrnn.model.spec's order), the
configuration and vocabulary as JSON; the page loads nothing from anywhere. Its random numbers
are its own (mulberry32), so a seed gives the same text in every browser, but not the text
`charrnn sample` gives with that seed.
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path

import numpy as np

from charrnn.atomic import atomic_write
from charrnn.export import wasm

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 60em; padding: 1em; }}
label {{ display: inline-block; margin: 0 1em 0.5em 0; }}
input[type=number] {{ width: 6em; }}
#prime {{ width: 100%; box-sizing: border-box; font: inherit; }}
#output {{ white-space: pre-wrap; font: 14px/1.4 ui-monospace, monospace; background: #f6f6f6;
          border: 1px solid #ddd; padding: 0.8em; min-height: 12em; }}
#status {{ color: #555; margin: 0.5em 0; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{description}</p>
<p><textarea id="prime" rows="2" placeholder="prime (optional)">{prime}</textarea></p>
<p>
<label>length <input id="length" type="number" min="0" value="500"></label>
<label>temperature <input id="temperature" type="number" min="0.01" step="0.05" value="1"></label>
<label>top-k <input id="topk" type="number" min="0" value="0"></label>
<label>top-p <input id="topp" type="number" min="0.01" max="1" step="0.05" value="1"></label>
<label>seed <input id="seed" type="number" min="0" placeholder="random"></label>
<button id="go">Generate</button> <button id="stop">Stop</button>
</p>
<div id="status">loading the model...</div>
<div id="output"></div>
<script type="application/json" id="charrnn-config">{config}</script>
<script type="application/octet-stream" id="charrnn-weights">{weights}</script>
<script>
{script}
</script>
</body>
</html>
"""


def _json_in_script(obj) -> str:
    """JSON that cannot end its <script> element early."""
    return json.dumps(obj, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e")


def render(model, name: str = "charrnn model") -> str:
    spec, meta = model.spec, model.meta
    gh = spec.gates * spec.hidden
    wasm_cols = gh if gh % 8 == 0 else 8  # mv8 serves the layers' G*H-column products
    config = {
        "cell": spec.cell,
        "layers": spec.layers,
        "hidden": spec.hidden,
        "vocab": list(model.vocab.chars),
        "name": name,
        "best_val_bpc": meta.get("best_val_bpc"),
        "wasm": base64.b64encode(wasm.module(wasm_cols)).decode("ascii"),
        "wasm_relaxed": base64.b64encode(wasm.module(wasm_cols, relaxed=True)).decode("ascii"),
        "wasm_cols": wasm_cols,
    }
    weights = base64.b64encode(np.ascontiguousarray(model.params.flat, dtype="<f4").tobytes())
    bpc = meta.get("best_val_bpc")
    description = (
        f"{spec.describe()}, {spec.n_params:,} parameters, {spec.vocab_size} characters"
        + (f", {bpc:.3f} bits per character on its validation text" if bpc else "")
        + ". Everything runs in this page; nothing is sent anywhere."
    )
    script = resources.files("charrnn.export").joinpath("page.js").read_text(encoding="utf-8")
    return PAGE.format(
        title=html.escape(f"charrnn: {name}"),
        description=html.escape(description),
        prime="",
        config=_json_in_script(config),
        weights=weights.decode("ascii"),
        script=script,
    )


def write(model, out, name: str | None = None) -> None:
    out = Path(out)
    if name is None:
        corpus = (model.meta.get("corpus") or {}).get("name")
        name = corpus or out.stem
    atomic_write(out, render(model, name).encode("utf-8"))
