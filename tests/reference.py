"""A plain NumPy reference of the model (rnn, gru, lstm; layers; dropout), written for clarity, not
speed: the equations of charrnn.model.spec, a loop over time per layer, and backpropagation by hand.

It takes one-hot inputs (the model's definition) rather than indices, so that the kernels' index
path is checked against the textbook product x_t U.0. Dropout masks are given as arrays of scale
factors (0 or 1/(1-p)), one (B, T, H) array per layer: the kernels' hash decides them, the
reference only applies them.
"""

import numpy as np


def one_hot(ids, vocab_size, dtype=np.float64):
    out = np.zeros(ids.shape + (vocab_size,), dtype=dtype)
    np.put_along_axis(out, ids[..., None], 1.0, axis=-1)
    return out


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def blocks(a, count):
    """The gate blocks of a (B, count*H) pre-activation."""
    return np.split(a, count, axis=1)


def cell_forward(cell, p, layer, x, h, c):
    """One step of one layer: (h_t, c_t, what the backward step needs)."""
    U, W, b = p[f"U.{layer}"], p[f"W.{layer}"], p[f"b.{layer}"]
    if cell == "rnn":
        h_new = np.tanh(x @ U + h @ W + b)
        return h_new, None, (x, h, h_new)
    if cell == "lstm":
        a_i, a_f, a_g, a_o = blocks(x @ U + h @ W + b, 4)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        return h_new, c_new, (x, h, c, i, f, g, o, c_new)
    # gru
    x_r, x_z, x_n = blocks(x @ U + b, 3)
    h_r, h_z, h_n = blocks(h @ W, 3)
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    hn = h_n + p[f"b_hn.{layer}"]
    n = np.tanh(x_n + r * hn)
    h_new = (1.0 - z) * n + z * h
    return h_new, None, (x, h, r, z, n, hn)


def cell_backward(cell, p, layer, g, cache, dh, dc):
    """Backward through one step: adds to the gradients g; returns (dx, dh_prev, dc_prev)."""
    U, W = p[f"U.{layer}"], p[f"W.{layer}"]
    if cell == "rnn":
        x, h, h_new = cache
        da = dh * (1.0 - h_new**2)
        da_x = da_h = da
        dc_prev = None
    elif cell == "lstm":
        x, h, c, i, f, gg, o, c_new = cache
        tc = np.tanh(c_new)
        dc = dc + dh * o * (1.0 - tc**2)
        da = np.concatenate(
            [dc * gg * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - gg**2), dh * tc * o * (1 - o)], axis=1
        )
        da_x = da_h = da
        dc_prev = dc * f
    else:
        x, h, r, z, n, hn = cache
        dn = dh * (1.0 - z) * (1.0 - n**2)  # through n = tanh(a_n)
        dr = dn * hn * r * (1.0 - r)
        dz = dh * (h - n) * z * (1.0 - z)
        da_x = np.concatenate([dr, dz, dn], axis=1)
        da_h = np.concatenate([dr, dz, dn * r], axis=1)
        g[f"b_hn.{layer}"] += (dn * r).sum(axis=0)
        dc_prev = None
    g[f"U.{layer}"] += x.T @ da_x
    g[f"W.{layer}"] += h.T @ da_h
    g[f"b.{layer}"] += da_x.sum(axis=0)
    dh_prev = da_h @ W.T
    if cell == "gru":
        dh_prev += dh * z
    return da_x @ U.T, dh_prev, dc_prev


def forward(cell, p, inputs, targets, state0, masks=None):
    """Mean cross-entropy in nats over the (B, T) window, the state after it (B, L, K, H), and
    what backward needs. masks: None, or per layer a (B, T, H) array of dropout scales."""
    B, T = inputs.shape
    layers = state0.shape[1]
    vocab_size = p["U.0"].shape[0]
    xs = [one_hot(inputs[:, t], vocab_size) for t in range(T)]  # each (B, V)
    state_last = np.zeros_like(state0)
    caches = []
    for layer in range(layers):
        h = state0[:, layer, 0]
        c = state0[:, layer, 1] if cell == "lstm" else None
        layer_caches, outputs = [], []
        for t in range(T):
            h, c, cache = cell_forward(cell, p, layer, xs[t], h, c)
            layer_caches.append(cache)
            outputs.append(h if masks is None else h * masks[layer][:, t])
        state_last[:, layer, 0] = h
        if cell == "lstm":
            state_last[:, layer, 1] = c
        caches.append(layer_caches)
        xs = outputs  # the next layer's input
    loss, probs = 0.0, []
    for t in range(T):
        logits = xs[t] @ p["V"] + p["b_y"]  # (B, V)
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        prob = e / e.sum(axis=1, keepdims=True)
        loss -= np.log(prob[np.arange(B), targets[:, t]]).sum()
        probs.append(prob)
    return loss / (B * T), state_last, (caches, xs, probs)


def backward(cell, p, inputs, targets, state0, cache, masks=None):
    """Gradients of the mean loss with respect to every parameter, and to state0."""
    caches, top, probs = cache
    B, T = inputs.shape
    layers = state0.shape[1]
    g = {name: np.zeros_like(value) for name, value in p.items()}
    dstate0 = np.zeros_like(state0)
    d_out = []  # dL/d(layer output)
    for t in range(T):
        dy = probs[t].copy()
        dy[np.arange(B), targets[:, t]] -= 1.0
        dy /= B * T  # (B, V)
        g["V"] += top[t].T @ dy
        g["b_y"] += dy.sum(axis=0)
        d_out.append(dy @ p["V"].T)
    for layer in reversed(range(layers)):
        if masks is not None:
            d_out = [d * masks[layer][:, t] for t, d in enumerate(d_out)]
        dh = np.zeros_like(state0[:, layer, 0])
        dc = np.zeros_like(dh)
        d_in = [None] * T
        for t in reversed(range(T)):
            d_in[t], dh, dc = cell_backward(cell, p, layer, g, caches[layer][t], d_out[t] + dh, dc)
        dstate0[:, layer, 0] = dh
        if cell == "lstm":
            dstate0[:, layer, 1] = dc
        d_out = d_in
    return g, dstate0


def states(cell, p, ids, layers):
    """Every layer's h (and c for lstm) after reading each of `ids` (one stream from a zero
    state): h (T, layers, H), c (T, layers, H) or None."""
    vocab_size, hidden = p["U.0"].shape[0], p["W.0"].shape[0]
    T = len(ids)
    h_all = np.zeros((T, layers, hidden))
    c_all = np.zeros((T, layers, hidden)) if cell == "lstm" else None
    h = [np.zeros((1, hidden)) for _ in range(layers)]
    c = [np.zeros((1, hidden)) for _ in range(layers)]
    for t in range(T):
        x = one_hot(np.array([ids[t]]), vocab_size)
        for layer in range(layers):
            h[layer], c_new, _ = cell_forward(cell, p, layer, x, h[layer], c[layer])
            if cell == "lstm":
                c[layer] = c_new
                c_all[t, layer] = c_new[0]
            h_all[t, layer] = h[layer][0]
            x = h[layer]
    return h_all, c_all


def next_char_log2probs(p, h_last):
    """log2 of the output distribution after each step, from the last layer's h (T, H)."""
    logits = h_last @ p["V"] + p["b_y"]
    logits = logits - logits.max(axis=1, keepdims=True)
    return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))) / np.log(2.0)
