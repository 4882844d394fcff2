"""The README's mapping between PyTorch's nn.RNN / nn.LSTM / nn.GRU weights and model.npz, checked
against PyTorch itself (skipped where PyTorch is not installed: it is never a dependency)."""

import numpy as np
import pytest

from charrnn.model.params import Params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab
from charrnn.sampling import BatchSampler

torch = pytest.importorskip("torch")

VOCAB, HIDDEN, LAYERS = 7, 6, 2


def torch_model(cell):
    torch.manual_seed(0)
    kind = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rnn = kind(VOCAB, HIDDEN, num_layers=LAYERS, batch_first=True)
    with torch.no_grad():
        for p in rnn.parameters():
            p.uniform_(-0.8, 0.8)  # biases far from zero, so a wrong sum shows
    head = torch.nn.Linear(HIDDEN, VOCAB)
    return rnn, head


def mapped_params(cell, rnn, head):
    """model.npz's arrays from PyTorch's, as the README says."""
    spec = ModelSpec(cell, LAYERS, HIDDEN, VOCAB)
    arrays = {}
    H = HIDDEN
    for layer in range(LAYERS):
        w_ih = getattr(rnn, f"weight_ih_l{layer}").detach().numpy()
        w_hh = getattr(rnn, f"weight_hh_l{layer}").detach().numpy()
        b_ih = getattr(rnn, f"bias_ih_l{layer}").detach().numpy()
        b_hh = getattr(rnn, f"bias_hh_l{layer}").detach().numpy()
        arrays[f"U.{layer}"] = w_ih.T
        arrays[f"W.{layer}"] = w_hh.T
        b = b_ih + b_hh
        if cell == "gru":
            b[2 * H :] = b_ih[2 * H :]
            arrays[f"b_hn.{layer}"] = b_hh[2 * H :]
        arrays[f"b.{layer}"] = b
    arrays["V"] = head.weight.detach().numpy().T
    arrays["b_y"] = head.bias.detach().numpy()
    return Params.from_arrays(spec, arrays)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_pytorch_weights_map_onto_model_npz(cell):
    rnn, head = torch_model(cell)
    params = mapped_params(cell, rnn, head)
    ids = np.random.default_rng(0).integers(0, VOCAB, size=25)
    with torch.no_grad():
        x = torch.nn.functional.one_hot(torch.from_numpy(ids), VOCAB).float()[None]  # (1, T, V)
        out, final = rnn(x)
        logits = head(out[0, -1]).numpy()
    h_n = (final[0] if cell == "lstm" else final)[:, 0].numpy()  # (L, H)
    sampler = BatchSampler(params, Vocab(tuple("abcdefg")))
    states = sampler.new_states(1)
    sampler.read(states, 0, ids)
    np.testing.assert_allclose(states[0, :, 0], h_n, rtol=0, atol=2e-6)
    if cell == "lstm":
        np.testing.assert_allclose(states[0, :, 1], final[1][:, 0].numpy(), rtol=0, atol=2e-6)
    ours = states[0, -1, 0] @ params.V + params.b_y
    np.testing.assert_allclose(ours, logits, rtol=0, atol=1e-5)
