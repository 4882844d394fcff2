"""`charrnn export MODEL --format onnx`: one step of the model as an ONNX graph, built on ONNX's
own RNN, GRU and LSTM operators (one per layer), with the `onnx` package's helper API.

Inputs and outputs (N: how many streams step together, any number; L layers; H units):

    char      int64   [N]         the character just read (its index in the vocabulary)
    h         float32 [L, N, H]   each layer's state before it (zeros to start)
    c         float32 [L, N, H]   LSTM only: each layer's cell state before it
    logprobs  float32 [N, vocab]  natural log-probabilities of the next character
    h_out     float32 [L, N, H]   the state after it (feed it back as h)
    c_out     float32 [L, N, H]   LSTM only

The vocabulary (a JSON list of the characters) is in the model's metadata_props as "vocab".

Gate orders: charrnn's LSTM blocks are [i, f, g, o], ONNX's LSTM wants [i, o, f, c]; charrnn's
GRU blocks are [r, z, n], ONNX's GRU wants [z, r, h], with linear_before_reset=1 (the reset
gate multiplies h R_h + Rb_h, which is charrnn's r * (h W_n + b_hn)). ONNX adds two biases (Wb
and Rb): Wb = b, Rb = 0 except GRU's h block, Rb_h = b_hn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from charrnn.atomic import atomic_write

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime 1.10 and later
# charrnn's gate blocks, in the order ONNX's operator wants them
ONNX_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
OPERATOR = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _blocks(array: np.ndarray, order: list[int], axis: int) -> np.ndarray:
    parts = np.split(array, len(order), axis=axis)
    return np.concatenate([parts[i] for i in order], axis=axis)


def layer_weights(params, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX's W [1, G*H, in], R [1, G*H, H] and B [1, 2*G*H] for one layer."""
    spec = params.spec
    order, H = ONNX_ORDER[spec.cell], spec.hidden
    W = _blocks(params[f"U.{layer}"], order, axis=1).T  # (G*H, in)
    R = _blocks(params[f"W.{layer}"], order, axis=1).T  # (G*H, H)
    wb = _blocks(params[f"b.{layer}"], order, axis=0)
    rb = np.zeros_like(wb)
    if spec.cell == "gru":  # the h block is last in [z, r, h]
        rb[2 * H :] = params[f"b_hn.{layer}"]
    B = np.concatenate([wb, rb])
    return (
        np.ascontiguousarray(W[None], np.float32),
        np.ascontiguousarray(R[None], np.float32),
        np.ascontiguousarray(B[None], np.float32),
    )


def build(model):
    """The step model as an onnx.ModelProto."""
    from onnx import TensorProto, helper, numpy_helper

    params, spec = model.params, model.spec
    L, H, V = spec.layers, spec.hidden, spec.vocab_size
    lstm = spec.cell == "lstm"
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    const("onehot_depth", np.array(V, dtype=np.int64))
    const("onehot_values", np.array([0.0, 1.0], dtype=np.float32))
    const("axis0", np.array([0], dtype=np.int64))
    const("axis1", np.array([1], dtype=np.int64))
    nodes.append(helper.make_node("OneHot", ["char", "onehot_depth", "onehot_values"], ["x_nv"], axis=-1))  # (N, V)
    nodes.append(helper.make_node("Unsqueeze", ["x_nv", "axis0"], ["x0"]))  # (1, N, V)
    x, h_outs, c_outs = "x0", [], []
    for layer in range(L):
        W, R, B = layer_weights(params, layer)
        const(f"W{layer}", W)
        const(f"R{layer}", R)
        const(f"B{layer}", B)
        const(f"index{layer}", np.array([layer], dtype=np.int64))
        nodes.append(helper.make_node("Gather", ["h", f"index{layer}"], [f"h{layer}"], axis=0))
        inputs = [x, f"W{layer}", f"R{layer}", f"B{layer}", "", f"h{layer}"]
        outputs = [f"y{layer}", f"h_out{layer}"]
        if lstm:
            nodes.append(helper.make_node("Gather", ["c", f"index{layer}"], [f"c{layer}"], axis=0))
            inputs.append(f"c{layer}")
            outputs.append(f"c_out{layer}")
        attributes = {"hidden_size": H}
        if spec.cell == "gru":
            attributes["linear_before_reset"] = 1
        nodes.append(helper.make_node(OPERATOR[spec.cell], inputs, outputs, **attributes))
        # y: (seq 1, directions 1, N, H) -> the next layer's input (1, N, H)
        nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
        x = f"x{layer + 1}"
        h_outs.append(f"h_out{layer}")
        c_outs.append(f"c_out{layer}")
    nodes.append(helper.make_node("Squeeze", [x, "axis0"], ["top"]))  # (N, H)
    const("V", np.ascontiguousarray(params.V, np.float32))
    const("b_y", np.ascontiguousarray(params.b_y, np.float32))
    nodes.append(helper.make_node("MatMul", ["top", "V"], ["logits_v"]))
    nodes.append(helper.make_node("Add", ["logits_v", "b_y"], ["logits"]))
    nodes.append(helper.make_node("LogSoftmax", ["logits"], ["logprobs"], axis=-1))
    nodes.append(helper.make_node("Concat", h_outs, ["h_out"], axis=0))
    if lstm:
        nodes.append(helper.make_node("Concat", c_outs, ["c_out"], axis=0))

    def state(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [L, "N", H])

    graph_inputs = [helper.make_tensor_value_info("char", TensorProto.INT64, ["N"]), state("h")]
    graph_outputs = [helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, ["N", V]), state("h_out")]
    if lstm:
        graph_inputs.append(state("c"))
        graph_outputs.append(state("c_out"))
    graph = helper.make_graph(nodes, "charrnn_step", graph_inputs, graph_outputs, inits)
    onnx_model = helper.make_model(graph, producer_name="charrnn", opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = IR_VERSION
    helper.set_model_props(
        onnx_model,
        {"vocab": json.dumps(list(model.vocab.chars)), "cell": spec.cell, "layers": str(L), "hidden": str(H)},
    )
    return onnx_model


def write(model, out) -> None:
    import onnx

    proto = build(model)
    onnx.checker.check_model(proto)
    atomic_write(Path(out), proto.SerializeToString())
