"""`charrnn export`: safetensors (PyTorch's names; checked against PyTorch where it is installed)
and ONNX (checked with onnxruntime) against the model's own forward pass, for each cell at 1 and 2
layers, with a vocabulary that has non-ASCII characters; the CLI's one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from logprobs_reference import logprobs, random_model

from charrnn.export.torch_names import torch_arrays
from charrnn.model.checkpoint import Model, save_model

CHARS = "abcdé\n ;—ü"  # non-ASCII, one of them beyond Latin-1
SHAPES = [(cell, layers) for cell in ("rnn", "gru", "lstm") for layers in (1, 2)]
HIDDEN = 6


def model_for(cell, layers, seed=0):
    params, vocab = random_model(cell, layers, HIDDEN, CHARS, seed=seed)
    return Model(vocab, params, {"best_val_bpc": 2.5})


def text_ids(model, n=40, seed=1):
    return np.random.default_rng(seed).integers(0, len(model.vocab), n)


def test_torch_names_follow_the_readme_mapping():
    model = model_for("gru", 2)
    arrays = torch_arrays(model.params)
    p, H = model.params, HIDDEN
    np.testing.assert_array_equal(arrays["rnn.weight_ih_l1"], p["U.1"].T)
    np.testing.assert_array_equal(arrays["rnn.weight_hh_l0"], p["W.0"].T)
    # the README's way back: b = b_ih + b_hh except the n block, b_hn = b_hh[2H:]
    b_ih, b_hh = arrays["rnn.bias_ih_l1"], arrays["rnn.bias_hh_l1"]
    np.testing.assert_array_equal(b_ih[: 2 * H] + b_hh[: 2 * H], p["b.1"][: 2 * H])
    np.testing.assert_array_equal(b_ih[2 * H :], p["b.1"][2 * H :])
    np.testing.assert_array_equal(b_hh[2 * H :], p["b_hn.1"])
    np.testing.assert_array_equal(arrays["output.weight"], p.V.T)
    np.testing.assert_array_equal(arrays["output.bias"], p.b_y)


@pytest.mark.parametrize("cell,layers", SHAPES)
def test_safetensors_file_holds_the_weights_and_vocabulary(cell, layers, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    from charrnn.export import export

    model = model_for(cell, layers)
    path = tmp_path / "m.safetensors"
    export(model, "safetensors", path)
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
        stored = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has keys(), no __iter__)
    assert json.loads(meta["vocab"]) == list(model.vocab.chars)
    assert (meta["cell"], int(meta["layers"]), int(meta["hidden"])) == (cell, layers, HIDDEN)
    expected = torch_arrays(model.params)
    assert set(stored) == set(expected)
    for name, array in expected.items():
        assert stored[name].dtype == np.float32
        np.testing.assert_array_equal(stored[name], array)


@pytest.mark.parametrize("cell,layers", SHAPES)
def test_pytorch_modules_loaded_from_safetensors_match(cell, layers, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    from charrnn.export import export

    model = model_for(cell, layers, seed=5)
    path = tmp_path / "m.safetensors"
    export(model, "safetensors", path)
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    vocab = json.loads(meta["vocab"])
    hidden, depth = int(meta["hidden"]), int(meta["layers"])
    kind = {"nn.RNN": torch.nn.RNN, "nn.GRU": torch.nn.GRU, "nn.LSTM": torch.nn.LSTM}
    rnn = kind[meta["torch_module"]](len(vocab), hidden, num_layers=depth, batch_first=True)
    head = torch.nn.Linear(hidden, len(vocab))
    state = load_file(str(path))
    rnn.load_state_dict({k[len("rnn.") :]: v for k, v in state.items() if k.startswith("rnn.")})
    head.load_state_dict({k[len("output.") :]: v for k, v in state.items() if k.startswith("output.")})
    text = "aé—ü;b\ncd ü"
    ids = np.array([vocab.index(c) for c in text])
    with torch.no_grad():
        x = torch.nn.functional.one_hot(torch.from_numpy(ids), len(vocab)).float()[None]
        out, _ = rnn(x)
        theirs = torch.log_softmax(head(out[0]), dim=-1).double().numpy()
    np.testing.assert_allclose(theirs, logprobs(model.params, ids), rtol=0, atol=1e-5)


def run_onnx(session, cell, layers, ids, streams=1):
    h = np.zeros((layers, streams, HIDDEN), np.float32)
    c = h.copy()
    out = []
    for i in ids:
        feed = {"char": np.full(streams, i, dtype=np.int64), "h": h}
        if cell == "lstm":
            feed["c"] = c
        results = session.run(None, feed)
        out.append(results[0])
        h = results[1]
        if cell == "lstm":
            c = results[2]
    return np.array(out)  # (T, streams, vocab)


@pytest.mark.parametrize("cell,layers", SHAPES)
def test_onnx_step_model_matches_charrnn(cell, layers, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from charrnn.export import export

    model = model_for(cell, layers, seed=2)
    path = tmp_path / "m.onnx"
    export(model, "onnx", path)
    proto = onnx.load(str(path))
    ops = {node.op_type for node in proto.graph.node}
    assert {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[cell] in ops
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["vocab"]) == list(model.vocab.chars)
    names = [i.name for i in proto.graph.input]
    assert names == (["char", "h", "c"] if cell == "lstm" else ["char", "h"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = text_ids(model)
    theirs = run_onnx(session, cell, layers, ids, streams=2)
    ours = logprobs(model.params, ids)
    np.testing.assert_allclose(theirs[:, 0], ours, rtol=0, atol=1e-5)
    np.testing.assert_allclose(theirs[:, 1], ours, rtol=0, atol=1e-5)


def _cli(*args, prelude=""):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    code = prelude + "from charrnn.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def test_without_the_extra_export_says_what_to_install(tmp_path):
    for fmt, blocked in (("onnx", "onnx"), ("safetensors", "safetensors")):
        done = _cli(
            "export",
            "shakespeare-lstm",
            "--format",
            fmt,
            "--out",
            str(tmp_path / f"m.{fmt}"),
            prelude=f"import sys; sys.modules[{blocked!r}] = None; sys.argv[0] = 'charrnn'; ",
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert 'pip install "charrnn[export]"' in lines[0] and blocked in lines[0]
        assert not (tmp_path / f"m.{fmt}").exists()


def test_cli_writes_each_format_and_refuses_to_overwrite(tmp_path):
    model = model_for("lstm", 2)
    save_model(tmp_path / "tiny", model.params, model.vocab, {"best_val_bpc": 2.5})
    for fmt in ("html",) + (("onnx", "safetensors") if _has("onnx", "safetensors") else ()):
        out = tmp_path / f"tiny.{fmt}"
        done = _cli("export", str(tmp_path / "tiny"), "--format", fmt, "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert out.stat().st_size > 0
        again = _cli("export", str(tmp_path / "tiny"), "--format", fmt, "--out", str(out))
        assert again.returncode != 0 and "--force" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    done = _cli("export", str(tmp_path / "nowhere"), "--format", "html", "--out", str(tmp_path / "x.html"))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def _has(*names):
    import importlib.util

    return all(importlib.util.find_spec(n) is not None for n in names)


def test_bundled_lstm_page_is_under_25_mb(tmp_path):
    from charrnn.export.html_format import render
    from charrnn.sampling import load

    page = render(load("shakespeare-lstm"), "shakespeare-lstm")
    assert len(page.encode("utf-8")) < 25e6
    assert "http://" not in page and "https://" not in page and " src=" not in page
