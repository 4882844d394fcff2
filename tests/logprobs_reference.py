"""Per-character log-probabilities of a charrnn model over a text, in float64 NumPy, from the
model's equations (tests/reference.py's cells): what every export is checked against."""

import numpy as np
from reference import cell_forward, one_hot


def random_model(cell, layers, hidden, chars, seed=0, scale=1.0):
    """A format-2 Params and Vocab with random weights (biases far from zero too, so a bias put
    in the wrong place shows)."""
    from charrnn.model.params import init_params
    from charrnn.model.spec import ModelSpec
    from charrnn.model.vocab import Vocab

    vocab = Vocab(tuple(sorted(set(chars))))
    spec = ModelSpec(cell, layers, hidden, len(vocab))
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, input_scale=scale)
    for array in params.arrays().values():
        if array.ndim == 1:
            array[...] = rng.uniform(-0.5, 0.5, size=array.shape)
    return params, vocab


def logprobs(params, ids):
    """(T, vocab) natural log-probabilities of the next character after reading ids[0..t], the
    state starting at zero."""
    spec = params.spec
    p = {name: a.astype(np.float64) for name, a in params.arrays().items()}
    h = [np.zeros((1, spec.hidden)) for _ in range(spec.layers)]
    c = [np.zeros((1, spec.hidden)) for _ in range(spec.layers)]
    out = []
    for i in ids:
        x = one_hot(np.array([int(i)]), spec.vocab_size)
        for layer in range(spec.layers):
            h[layer], c_new, _ = cell_forward(spec.cell, p, layer, x, h[layer], c[layer])
            if c_new is not None:
                c[layer] = c_new
            x = h[layer]
        logits = (x @ p["V"] + p["b_y"])[0]
        top = logits.max()
        out.append(logits - top - np.log(np.exp(logits - top).sum()))
    return np.array(out)
