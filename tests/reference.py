"""A plain NumPy reference of the vanilla RNN, written for clarity, not speed.

It takes one-hot inputs (the model's definition) rather than indices, so that the kernels' index
path is checked against the textbook product x_t U.
"""

import numpy as np


def one_hot(ids, vocab_size, dtype=np.float64):
    out = np.zeros(ids.shape + (vocab_size,), dtype=dtype)
    np.put_along_axis(out, ids[..., None], 1.0, axis=-1)
    return out


def forward(p, inputs, targets, h0):
    """Mean cross-entropy in nats over the (B, T) window, plus what backward needs."""
    B, T = inputs.shape
    vocab_size = p["U"].shape[0]
    x = one_hot(inputs, vocab_size, p["U"].dtype)               # (B, T, V)
    hs = [h0]
    probs = []
    loss = 0.0
    for t in range(T):
        h = np.tanh(x[:, t] @ p["U"] + hs[-1] @ p["W"] + p["b_h"])  # (B, H)
        logits = h @ p["V"] + p["b_y"]                               # (B, V)
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        prob = e / e.sum(axis=1, keepdims=True)                       # (B, V)
        loss -= np.log(prob[np.arange(B), targets[:, t]]).sum()
        hs.append(h)
        probs.append(prob)
    return loss / (B * T), (x, hs, probs)


def backward(p, inputs, targets, cache):
    """Gradients of the mean loss with respect to every parameter and to h0."""
    x, hs, probs = cache
    B, T = inputs.shape
    g = {name: np.zeros_like(value) for name, value in p.items()}
    dh_next = np.zeros_like(hs[0])                                    # (B, H)
    for t in reversed(range(T)):
        dy = probs[t].copy()
        dy[np.arange(B), targets[:, t]] -= 1.0
        dy /= B * T                                                   # (B, V)
        g["V"] += hs[t + 1].T @ dy
        g["b_y"] += dy.sum(axis=0)
        dh = dy @ p["V"].T + dh_next                                  # (B, H)
        da = dh * (1.0 - hs[t + 1] ** 2)                              # through tanh
        g["U"] += x[:, t].T @ da
        g["W"] += hs[t].T @ da
        g["b_h"] += da.sum(axis=0)
        dh_next = da @ p["W"].T
    return g, dh_next                                                 # dh_next is dL/dh0
