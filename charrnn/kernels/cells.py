"""The cells' elementwise work for one time step of one batch chunk, forward and backward beside
each other (see charrnn.model.spec for the equations). Everything else of a step is the recurrent product
(charrnn.kernels.stepgemm).

Arrays are C-contiguous (rows, ...) of one dtype. A pre-activation block of G*H columns holds the
gate blocks side by side (lstm [i, f, g, o], gru [r, z, n]); the forward kernels overwrite it with
the gates' values, which is what the backward kernels read. Backward, `dh_above` is dL/dh_t from
above (the output layer or the next layer's input), `dh_next` dL/dh_t through the recurrence
(from step t+1), and `da` the gradient of the pre-activation.

fast_tanh and fast_sigmoid keep their own fast-math flags when inlined here (without "reassoc"
and "arcp": charrnn.kernels.fastmath.FASTMATH_ORDERED), so a unit rounds alike in a loop's
vector body and its scalar remainder. Numba's cache does not see a change of fastmath.py:
after one, clear the cache (NUMBA_CACHE_DIR) or these kernels keep the old code.
"""

from __future__ import annotations

from numba import njit

from charrnn.kernels.fastmath import FAST, fast_sigmoid, fast_tanh


@njit(inline="always")
def _blocks3(row, hidden):
    """The 3 gate blocks of a row of 3H, as separate views (indexing one row at offsets kept
    LLVM from vectorising the loops: it could not tell the blocks apart; measured 6x slower)."""
    return row[:hidden], row[hidden : 2 * hidden], row[2 * hidden :]


@njit(inline="always")
def _blocks4(row, hidden):
    """The 4 gate blocks of a row of 4H, as separate views."""
    return row[:hidden], row[hidden : 2 * hidden], row[2 * hidden : 3 * hidden], row[3 * hidden :]


# ------------------------------------------------------------------ one unit of each cell
# The cells' equations, once: the training kernels below and the sampler (charrnn.kernels.sampler)
# both step a unit with these.


@njit(inline="always")
def lstm_unit(a_i, a_f, a_g, a_o, c_prev):
    """(i, f, g, o, c, h) of one LSTM unit from its pre-activations and c_{t-1}:
    c = f*c_prev + i*g, h = o*tanh(c)."""
    i = fast_sigmoid(a_i)
    f = fast_sigmoid(a_f)
    g = fast_tanh(a_g)
    o = fast_sigmoid(a_o)
    c = f * c_prev + i * g
    return i, f, g, o, c, o * fast_tanh(c)


@njit(inline="always")
def gru_unit(x_r, x_z, x_n, h_r, h_z, h_n, b_hn, h_prev):
    """(r, z, n, h_n + b_hn, h) of one GRU unit (PyTorch's form) from a_x = x U + b and a_h = h W:
    r = sig(x_r + h_r), z = sig(x_z + h_z), n = tanh(x_n + r*(h_n + b_hn)), h = n + z*(h_prev - n)."""
    r = fast_sigmoid(x_r + h_r)
    z = fast_sigmoid(x_z + h_z)
    hidden_n = h_n + b_hn
    n = fast_tanh(x_n + r * hidden_n)
    return r, z, n, hidden_n, n + z * (h_prev - n)


# ------------------------------------------------------------------ rnn: h = tanh(a)


@njit(cache=True, nogil=True, **FAST)
def rnn_forward(a):
    """a (rows, H): the pre-activation in, h out."""
    rows, hidden = a.shape
    for i in range(rows):
        row = a[i]
        for j in range(hidden):
            row[j] = fast_tanh(row[j])


@njit(cache=True, nogil=True, **FAST)
def rnn_backward(dh_above, dh_next, h, da):
    """da = (dh_above + dh_next) * (1 - h^2); all (rows, H)."""
    one = da.dtype.type(1.0)
    rows, hidden = da.shape
    for i in range(rows):
        up, nx, hh, d = dh_above[i], dh_next[i], h[i], da[i]
        for j in range(hidden):
            d[j] = (up[j] + nx[j]) * (one - hh[j] * hh[j])


# ------------------------------------------------------------------ lstm


@njit(cache=True, nogil=True, **FAST)
def lstm_forward(gates, c_prev, c, h):
    """gates (rows, 4H): a = [i, f, g, o] pre-activations in, their values out; c_prev (rows, H);
    writes c = f*c_prev + i*g and h = o*tanh(c), (rows, H)."""
    rows, hidden = c.shape
    for i in range(rows):
        a_i, a_f, a_g, a_o = _blocks4(gates[i], hidden)
        cp, cn, hn = c_prev[i], c[i], h[i]
        for j in range(hidden):
            a_i[j], a_f[j], a_g[j], a_o[j], cn[j], hn[j] = lstm_unit(a_i[j], a_f[j], a_g[j], a_o[j], cp[j])


@njit(cache=True, nogil=True, **FAST)
def lstm_backward(dh_above, dh_next, dc_next, gates, c_prev, c, da):
    """da (rows, 4H) from dh = dh_above + dh_next and dc_next (dL/dc_t from step t+1); gates
    (rows, 4H) the values [i, f, g, o]; c_prev, c (rows, H). Overwrites dc_next with dL/dc_{t-1}
    (the part through c; dL/dh_{t-1} is da @ W^T)."""
    one = da.dtype.type(1.0)
    rows, hidden = c.shape
    for i in range(rows):
        g_i, g_f, g_g, g_o = _blocks4(gates[i], hidden)
        d_i, d_f, d_g, d_o = _blocks4(da[i], hidden)
        up, nx, dcn, cp, cc = dh_above[i], dh_next[i], dc_next[i], c_prev[i], c[i]
        for j in range(hidden):
            ig, fg, gg, og = g_i[j], g_f[j], g_g[j], g_o[j]
            tc = fast_tanh(cc[j])
            dh = up[j] + nx[j]
            dc = dh * og * (one - tc * tc) + dcn[j]
            d_i[j] = dc * gg * ig * (one - ig)
            d_f[j] = dc * cp[j] * fg * (one - fg)
            d_g[j] = dc * ig * (one - gg * gg)
            d_o[j] = dh * tc * og * (one - og)
            dcn[j] = dc * fg


# ------------------------------------------------------------------ gru (PyTorch's form)


@njit(cache=True, nogil=True, **FAST)
def gru_forward(gates, ah, b_hn, h_prev, h, ahn):
    """gates (rows, 3H): a_x = x U + b in, the values [r, z, n] out; ah (rows, 3H) = h_prev W;
    b_hn (H,); h_prev (rows, H). Writes h = (1-z)*n + z*h_prev and ahn = ah[n] + b_hn (rows, H),
    which the backward pass needs (r multiplies it)."""
    rows, hidden = h.shape
    for i in range(rows):
        a_r, a_z, a_n = _blocks3(gates[i], hidden)
        w_r, w_z, w_n = _blocks3(ah[i], hidden)
        hp, hn, an = h_prev[i], h[i], ahn[i]
        for j in range(hidden):
            a_r[j], a_z[j], a_n[j], an[j], hn[j] = gru_unit(
                a_r[j], a_z[j], a_n[j], w_r[j], w_z[j], w_n[j], b_hn[j], hp[j]
            )


@njit(cache=True, nogil=True, **FAST)
def gru_backward(dh_above, dh_next, gates, ahn, h_prev, dah, dxn):
    """From dh = dh_above + dh_next: dah (rows, 3H), the gradient of a_h = h_prev W, and dxn
    (rows, H), the n block of the gradient of a_x = x U + b (its r and z blocks are dah's; its n
    block is dah's divided by r: dah[n] = dxn * r, which is also db_hn's share). Overwrites
    dh_next with dh * z, the direct part of dL/dh_{t-1} (dah @ W^T is added to it). Writing the
    two gradients whole (6H per row instead of 4H) cost the backward cell a third more time."""
    one = dah.dtype.type(1.0)
    rows, hidden = h_prev.shape
    for i in range(rows):
        g_r, g_z, g_n = _blocks3(gates[i], hidden)
        w_r, w_z, w_n = _blocks3(dah[i], hidden)
        up, nx, an, hp, x_n = dh_above[i], dh_next[i], ahn[i], h_prev[i], dxn[i]
        for j in range(hidden):
            r, z, n = g_r[j], g_z[j], g_n[j]
            dh = up[j] + nx[j]
            dn = dh * (one - z) * (one - n * n)
            w_r[j] = dn * an[j] * r * (one - r)
            w_z[j] = dh * (hp[j] - n) * z * (one - z)
            w_n[j] = dn * r
            x_n[j] = dn
            nx[j] = dh * z
