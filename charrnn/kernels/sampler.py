"""The sampler's kernels: a batch of streams stepped one character at a time, each step's columns
split over `parts` threads.

One step, for every stream (a row of the state (n, L, K, H), see charrnn.model.spec): the logits
h V + b_y of the last layer's h, one id drawn from them (draw_one) or taken from a prime, then
every layer's cell fed with it. One stream's step is a matrix-vector product per
layer, bound by reading W (1 MB for a 512-unit vanilla layer, 4 MB for an LSTM's) from memory:
on one core it comes from L3 once it is larger than L2. So the units of every layer are split in
`parts` contiguous ranges and part p computes, on a thread of its own, the columns of its units in
every gate block: its share of W (half of it at 2 parts: 2 MB of an LSTM's 4 MB) can stay in its
core's L2 from one character to the next. Between layers (the next layer needs all of h)
the threads meet at a spin barrier (charrnn.kernels.sync); each part writes its units of the new
state into a second state array while the old one is still read, and the two arrays swap.

Which part computes a column does not change its arithmetic: every element of a product is one
chain of multiply-adds in k order (the register-blocked product over packed strips), or the same
expression whatever its column (the row loop), and the cells are elementwise. So a stream's text
does not depend on the number of parts, nor on the other streams of its batch. A column falls in
a loop's vector body or in its scalar remainder depending on the parts' width, so the row loop
and the fast tanh, sigmoid and exp are compiled without "reassoc" and "arcp"
(fastmath.FASTMATH_ORDERED), which let LLVM group the two differently where there is no FMA
(tests/test_sampler_threads.py checks it; CI compiles them for generic x86-64 too).

Weights of part p, for units [p*Hp, (p+1)*Hp) of every layer (Hp = H / parts), one float32
buffer per part (a row of `weights` (parts, S)) with every layer's starts in `layout` (L + 1, 4):
    U.0 (vocab, G*Hp)      a row per character (the input product of layer 0 is a row gather);
    U.l, W.l (H, G*Hp)     packed in the product's strips (G*Hp/32, H, 32) where it runs,
                           else plain; U.l for l >= 1;
    b.l (G*Hp,), b_hn.l (Hp,) (gru only; -1 otherwise);
    then the part's columns of the output layer (output_operand), where layout[L] says.
Column g*Hp + u of a part's arrays is column g*H + p*Hp + u of the model's.
The output layer's columns are split too (see output_operand): every part computes its columns of
every stream's logits, and after a barrier each stream's draw reads them all.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from charrnn.kernels.cells import gru_unit, lstm_unit
from charrnn.kernels.fastmath import FASTMATH, FASTMATH_ORDERED, fast_tanh
from charrnn.kernels.layout import GRU, LSTM, RNN
from charrnn.kernels.parts import STRIP
from charrnn.kernels.stepgemm import step_product
from charrnn.kernels.sync import COUNTER_STRIDE, arrive_and_wait, cycle_counter

# The kernels use the training kernels' fast-math flags (reassociation lets LLVM vectorise the row
# loops); draw_one is compiled without them, so a character's choice is exact IEEE arithmetic on
# the probabilities.
# From this many streams on, each thread draws for its own share of the streams (then waits for
# the other's ids); below it every thread draws every stream's character itself.
SPLIT_DRAWS_FROM = 2


# ----------------------------------------------------------------------------------------------
# Kernels. Arrays are C-contiguous unless said; weights and states float32, ids int64, uniforms
# float64.


@njit(cache=True, fastmath=FASTMATH_ORDERED, nogil=True)
def _add_rows_times(x, M, out):
    """out (n, N) += x (n, K) @ M (K, N), as combinations of M's rows, four at a time: each block
    of four rows serves every stream while it is in the L1 cache, so M is read from memory once
    per call whatever n is. Every element is the same expression whatever its row and column:
    one chain of multiply-adds in k order, compiled without "reassoc" (FASTMATH_ORDERED) so that
    the loop's vector body and its scalar remainder keep that order where there is no FMA to
    fuse it (with "reassoc", generic x86-64 regrouped the chain differently in the two).

    Measured at H=512 on one core: this loop vectorises (28 GFLOP/s for one stream); blocking the
    columns or handling four streams per pass kept LLVM from vectorising it (7 and 14 GFLOP/s)."""
    n, K = x.shape
    N = M.shape[1]
    full = K - K % 4
    for i in range(0, full, 4):
        m0, m1, m2, m3 = M[i], M[i + 1], M[i + 2], M[i + 3]
        for r in range(n):
            a0, a1, a2, a3 = x[r, i], x[r, i + 1], x[r, i + 2], x[r, i + 3]
            row = out[r]
            for j in range(N):
                row[j] = row[j] + a0 * m0[j] + a1 * m1[j] + a2 * m2[j] + a3 * m3[j]
    for i in range(full, K):
        m0 = M[i]
        for r in range(n):
            a0 = x[r, i]
            row = out[r]
            for j in range(N):
                row[j] += a0 * m0[j]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _add_times(x, operand, packed, x_rows, out):
    """out (n, N) += x (n, K) @ M, M (K, N) given as its buffer `operand` (1-D): packed in
    strips for the register-blocked product (from a contiguous copy of x in x_rows (n, K)), or
    plain for the row loop."""
    n, K = x.shape
    N = out.shape[1]
    if packed:
        for r in range(n):
            x_rows[r] = x[r]
        step_product(x_rows, operand.reshape((N // STRIP, K, STRIP)), out, True)
    else:
        _add_rows_times(x, operand.reshape((K, N)), out)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _cells(cell, hp, ax, ah, b_hn, cur, nxt, layer, lo):
    """Units [lo, lo + Hp) of one layer's new state nxt[:, layer] from its pre-activations ax,
    ah (n, G*Hp) (gate blocks of Hp columns) and the old state cur: rnn h = tanh(ax); lstm from
    ax's blocks [i, f, g, o]; gru from ax = x U + b and ah = h W, blocks [r, z, n] (see
    charrnn.model.spec), with the training kernels' fast float32 tanh and sigmoid."""
    n = ax.shape[0]
    kinds = cur.shape[2]
    for r in range(n):
        a = ax[r]
        h_new = nxt[r, layer, 0, lo : lo + hp]
        if cell == RNN:
            for j in range(hp):
                h_new[j] = fast_tanh(a[j])
        elif cell == LSTM:
            c_old = cur[r, layer, kinds - 1, lo : lo + hp]
            c_new = nxt[r, layer, kinds - 1, lo : lo + hp]
            for j in range(hp):
                _, _, _, _, c_new[j], h_new[j] = lstm_unit(a[j], a[hp + j], a[2 * hp + j], a[3 * hp + j], c_old[j])
        else:
            a_h = ah[r]
            h_old = cur[r, layer, 0, lo : lo + hp]
            for j in range(hp):
                h_new[j] = gru_unit(
                    a[j], a[hp + j], a[2 * hp + j], a_h[j], a_h[hp + j], a_h[2 * hp + j], b_hn[j], h_old[j]
                )[4]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _layer_step(buffer, layout, layer, cell, packed, hp, lo, cur, nxt, ids, ax, ah, x_rows):
    """This part's units of layer `layer` for every stream: nxt[:, layer] from cur (the state
    before this character) and, for layer >= 1, the layer below in nxt (already complete).
    buffer: this part's weights; ids (n,) the character each stream reads; ax, ah (n, G*Hp) and
    x_rows (n, H) scratch; this part's units are [lo, lo + hp)."""
    n, _, _, hidden = cur.shape
    width = ax.shape[1]
    u0, w0, b0, bhn0 = layout[layer, 0], layout[layer, 1], layout[layer, 2], layout[layer, 3]
    b = buffer[b0 : b0 + width]
    b_hn = buffer[bhn0 : bhn0 + hp] if bhn0 >= 0 else b[:0]
    if layer == 0:
        for r in range(n):
            row = buffer[u0 + ids[r] * width : u0 + (ids[r] + 1) * width]
            for j in range(width):
                ax[r, j] = row[j] + b[j]
    else:
        for r in range(n):
            for j in range(width):
                ax[r, j] = b[j]
        _add_times(nxt[:, layer - 1, 0, :], buffer[u0 : u0 + hidden * width], packed, x_rows, ax)
    W = buffer[w0 : w0 + hidden * width]
    if cell == GRU:
        ah[:] = 0.0
        _add_times(cur[:, layer, 0, :], W, packed, x_rows, ah)  # a_h = h W, kept apart
    else:
        _add_times(cur[:, layer, 0, :], W, packed, x_rows, ax)  # a += h W
    _cells(cell, hp, ax, ah, b_hn, cur, nxt, layer, lo)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _logits(V_part, b_y, packed, lo, cur, x_rows, logits):
    """This part's columns [lo, lo + Cp) of the logits h V + b_y for every stream, h its last
    layer's state: logits (n, Cp), zero past the vocabulary. V_part is this part's share of
    output_operand; x_rows (n, H) scratch."""
    n, layers, _, hidden = cur.shape
    vocab_size = b_y.shape[0]
    columns = logits.shape[1]
    for r in range(n):
        for k in range(columns):
            logits[r, k] = b_y[lo + k] if lo + k < vocab_size else 0.0
    if packed:
        for r in range(n):
            x_rows[r] = cur[r, layers - 1, 0]
        step_product(x_rows, V_part, logits, True)
        return
    V_t = V_part[0]  # (Cp, H)
    for r in range(n):
        h = cur[r, layers - 1, 0]
        for k in range(columns):
            acc = logits[r, k]
            for i in range(hidden):
                acc += V_t[k, i] * h[i]
            logits[r, k] = acc


@njit(cache=True)
def draw_one(logits, uniform, inv_temperature, top_k, top_p, greedy, weights):
    """The id drawn from softmax(logits * inv_temperature) cut by top_k / top_p, by inverse CDF
    at `uniform` in [0, 1); the first largest logit if `greedy`. `weights` (V,) float64 is scratch.
    Only logits' first len(weights) entries are read.

    Sums run in float64, one element after another, so a total and the running sum that is
    compared with it agree exactly and the walk always ends on a character of non-zero weight.
    """
    vocab_size = weights.shape[0]
    best = 0
    for k in range(1, vocab_size):
        if logits[k] > logits[best]:
            best = k
    if greedy:
        return best
    peak = np.float64(logits[best])
    for k in range(vocab_size):
        # exp(0) = 1 at the peak, so the total is at least 1 however low the temperature.
        weights[k] = np.exp((np.float64(logits[k]) - peak) * inv_temperature)

    if (top_k <= 0 or top_k >= vocab_size) and top_p >= 1.0:
        total = 0.0
        for k in range(vocab_size):
            total += weights[k]
        target = uniform * total
        running = 0.0
        for k in range(vocab_size):
            running += weights[k]
            if running > target:
                return k
        return best

    # Most likely first; a stable sort breaks ties by id, the same with and without the JIT.
    order = np.argsort(-weights, kind="mergesort")  # (V,) ids by falling weight
    keep = vocab_size
    if 0 < top_k < vocab_size:
        keep = top_k
    if top_p < 1.0:
        rank = _crossing(weights, order, keep, top_p, True)
        if rank >= 0:
            keep = rank + 1
    rank = _crossing(weights, order, keep, uniform, False)
    return order[rank] if rank >= 0 else order[0]


@njit(cache=True)
def _crossing(weights, order, keep, fraction, inclusive):
    """The first rank r < keep where the running sum of weights[order[:r + 1]] passes (or, if
    `inclusive`, reaches) `fraction` of the sum over order[:keep]; -1 if none does."""
    total = 0.0
    for r in range(keep):
        total += weights[order[r]]
    limit = fraction * total
    running = 0.0
    for r in range(keep):
        running += weights[order[r]]
        if running > limit or (inclusive and running == limit):
            return r
    return -1


@njit(cache=True, nogil=True)
def _output_part(buffer, layout):
    """A part's columns of the output layer, a view of its buffer (see output_operand)."""
    row = layout.shape[0] - 1
    start, a, b, c = layout[row, 0], layout[row, 1], layout[row, 2], layout[row, 3]
    return buffer[start : start + a * b * c].reshape((a, b, c))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _parts_logits(first, last, weights, layout, b_y, packed, cur, x_rows, shared_logits):
    """Parts [first, last)'s columns of every stream's logits from the last layer of cur, into
    their rows of shared_logits (parts, n, Cp)."""
    columns = shared_logits.shape[2]
    for p in range(first, last):
        _logits(_output_part(weights[p], layout), b_y, packed, p * columns, cur, x_rows, shared_logits[p])


@njit(cache=True, nogil=True)
def _row_logits(shared_logits, r, row_logits):
    """Stream r's logits, whole (C,), from the parts' shares in shared_logits (parts, n, Cp)."""
    parts, _, columns = shared_logits.shape
    for q in range(parts):
        row_logits[q * columns : (q + 1) * columns] = shared_logits[q, r]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def log_prob(logits, target, vocab_size):
    """log softmax(logits[:vocab_size])[target] in float64 (natural log)."""
    top = logits[0]
    for k in range(1, vocab_size):
        top = max(top, logits[k])
    total = 0.0
    for k in range(vocab_size):
        total += math.exp(float(logits[k] - top))
    return float(logits[target] - top) - math.log(total)


@njit(cache=True, nogil=True)
def _wait(counters, me, epoch):
    """arrive_and_wait, its cycles counted from the second round on; the first round's end is
    noted in the counters' spare slot (me * COUNTER_STRIDE + 1)."""
    cycles = arrive_and_wait(counters, me, epoch)
    if epoch == 1:
        counters[me * COUNTER_STRIDE + 1] = cycle_counter()
        return 0
    return cycles


@njit(cache=True, nogil=True)
def _meet(team, counters, me, clock):
    """The threads' barrier where each part runs on a thread of its own (`team`), else nothing.
    clock (2,) int64: the barriers passed so far, and the cycles this thread waited at them
    (_wait: the first one left out)."""
    if team:
        clock[0] += 1
        clock[1] += _wait(counters, me, clock[0])


@njit(cache=True, nogil=True)
def _stream_rows(me, parts, n, split):
    """(owner (n,) int64, r0, r1): the thread that draws or scores each stream, and this thread's
    streams [r0, r1): its share where `split`, else all of them."""
    owner = np.full(n, me, dtype=np.int64)
    r0, r1 = 0, n
    if split:
        for q in range(parts):
            owner[q * n // parts : (q + 1) * n // parts] = q
        r0, r1 = me * n // parts, (me + 1) * n // parts
    return owner, r0, r1


@njit(cache=True, nogil=True)
def _draw_rows(s, me, split, r0, r1, shared_logits, options, row_logits, probabilities, drawn, out_ids):
    """Streams [r0, r1)'s character of step s, drawn from their whole logits (the parts' shares
    in shared_logits (parts, n, Cp)) into drawn[me] and, by their owner, out_ids[:, s]. options:
    (uniforms (n, steps), inv_temperature, top_k, top_p, greedy), see draw_one."""
    uniforms, inv_temperature, top_k, top_p, greedy = options
    for r in range(r0, r1):
        _row_logits(shared_logits, r, row_logits)
        drawn[me, r] = draw_one(
            row_logits, uniforms[r, s], inv_temperature[r], top_k[r], top_p[r], greedy[r], probabilities
        )
        if split or me == 0:
            out_ids[r, s] = drawn[me, r]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _read_step(first, last, weights, layout, cell, packed, cur, nxt, ids, scratch, team, counters, me, clock):
    """Parts [first, last) of every layer's new state nxt from cur, each stream reading ids[r]:
    layer by layer, the threads meeting after each (the next layer needs all of h). scratch:
    (ax, ah, x_rows), see _layer_step."""
    ax, ah, x_rows = scratch
    hp = cur.shape[3] // weights.shape[0]
    for layer in range(cur.shape[1]):
        for p in range(first, last):
            _layer_step(weights[p], layout, layer, cell, packed, hp, p * hp, cur, nxt, ids, ax, ah, x_rows)
        _meet(team, counters, me, clock)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _score_rows(s, r0, r1, vocab_size, shared_logits, row_logits, targets, log_probs, record_logits):
    """Streams [r0, r1) after step s: log_probs[r, s] the natural log of the probability of
    targets[r, s] (log_prob), and where record_logits (n, steps, vocab) float32 is on (steps > 0),
    the whole row of logits in record_logits[r, s]."""
    recording = record_logits.shape[1] > 0
    for r in range(r0, r1):
        _row_logits(shared_logits, r, row_logits)
        log_probs[r, s] = log_prob(row_logits, targets[r, s], vocab_size)
        if recording:
            record_logits[r, s] = row_logits[:vocab_size]


@njit(cache=True, nogil=True)
def _record_units(lo, hi, cur, record):
    """Units [lo, hi) of every stream's state cur (n, L, K, H) into record (n, L, K, H)."""
    record[:, :, :, lo:hi] = cur[:, :, :, lo:hi]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def run_parts(
    first,
    last,
    weights,
    layout,
    cell,
    packed,
    b_y,
    states,
    spare,
    forced,
    uniforms,
    inv_temperature,
    top_k,
    top_p,
    greedy,
    out_ids,
    targets,
    log_probs,
    record_logits,
    record_states,
    shared_logits,
    drawn,
    counters,
):
    """Parts [first, last) of `steps` characters for every stream of `states` (n, L, K, H), in
    place (parts = weights.shape[0]). Either one thread runs every part, one after another at
    each stage, or each part has a thread of its own, all running this at the same time, and
    they meet at a barrier after each stage. Both give the same bits.

    Drawing (uniforms (n, steps), forced (n, 0)): at each step the parts compute their columns of
    every stream's logits; then each stream's next character is drawn with its uniform and
    options ((n,) arrays) by one thread (by every thread, for a lone stream), written to out_ids
    (n, steps), and fed in. Reading (uniforms (n, 0)): forced (n, steps) are fed in; scoring
    (targets (n, steps) int64 beside them, else (n, 0)): after each character is read, the log
    probability (natural log, float64) of targets[r, s] is written to log_probs[r, s], and, where
    record_logits (n, steps, vocab) float32 is on (else (n, 0, vocab)), its whole row of logits.
    record_states (n, steps, L, K, H) float32 (else (n, 0, L, K, H)): every stream's state after
    each step, each part writing its own units once the last layer's barrier has passed.
    spare (n, L, K, H) is the second state array; shared_logits (parts, n, Cp) float32,
    drawn (parts, n) int64 and counters (parts * COUNTER_STRIDE,) int64, zeroed, are shared.
    Returns the share of its time this thread spent waiting at barriers, the first one (where
    the threads start together) left out: 0 for one thread."""
    parts = weights.shape[0]
    team = last - first < parts  # threads meet at barriers
    me = first
    n, _, _, hidden = states.shape
    hp = hidden // parts
    width = (layout[0, 1] - layout[0, 0]) // b_y.shape[0]  # G*Hp: U.0 is (vocab, G*Hp)
    drawing = uniforms.shape[1] > 0
    steps = uniforms.shape[1] if drawing else forced.shape[1]
    scoring = not drawing and targets.shape[1] > 0
    recording = record_states.shape[1] > 0
    split = (drawing or scoring) and team and n >= SPLIT_DRAWS_FROM
    owner, r0, r1 = _stream_rows(me, parts, n, split)
    scratch = (
        np.empty((n, width), dtype=np.float32),  # ax (n, G*Hp)
        np.empty((n, width), dtype=np.float32),  # ah
        np.empty((n, hidden), dtype=np.float32),  # x_rows (n, H)
    )
    x_rows = scratch[2]
    row_logits = np.empty(parts * shared_logits.shape[2], dtype=np.float32)  # (C,) one stream's, whole
    probabilities = np.empty(b_y.shape[0], dtype=np.float64)  # (vocab,)
    options = (uniforms, inv_temperature, top_k, top_p, greedy)
    ids = np.empty(n, dtype=np.int64)  # (n,)
    clock = np.zeros(2, dtype=np.int64)  # barriers passed, cycles waited after the first
    cur, nxt = states, spare
    for s in range(steps):
        if drawing:
            _parts_logits(first, last, weights, layout, b_y, packed, cur, x_rows, shared_logits)
            _meet(team, counters, me, clock)
            _draw_rows(s, me, split, r0, r1, shared_logits, options, row_logits, probabilities, drawn, out_ids)
            _meet(split, counters, me, clock)
            for r in range(n):
                ids[r] = drawn[owner[r], r]
        else:
            for r in range(n):
                ids[r] = forced[r, s]
        _read_step(first, last, weights, layout, cell, packed, cur, nxt, ids, scratch, team, counters, me, clock)
        cur, nxt = nxt, cur
        if recording:
            _record_units(first * hp, last * hp, cur, record_states[:, s])
        if scoring:
            _parts_logits(first, last, weights, layout, b_y, packed, cur, x_rows, shared_logits)
            _meet(team, counters, me, clock)
            if split or me == 0:
                _score_rows(s, r0, r1, b_y.shape[0], shared_logits, row_logits, targets, log_probs, record_logits)
    if steps % 2:  # the last state is in spare: these parts' units
        lo, hi = first * hp, last * hp
        states[:, :, :, lo:hi] = spare[:, :, :, lo:hi]
    if clock[0] <= 1:
        return 0.0
    return clock[1] / max(cycle_counter() - counters[me * COUNTER_STRIDE + 1], 1)
