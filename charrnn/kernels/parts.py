"""The sampler's weights cut into parts (Python, once per model): each part holds its share of every
layer's hidden units (their columns of U and W, packed in strips where AVX-512 makes that pay) and
its columns of the output layer, in one buffer, so that each thread of charrnn.kernels.sampler
reads only its own part. See charrnn.kernels.sampler's docstring for the layout's use.
"""

from __future__ import annotations

import contextlib
import mmap
from pathlib import Path

import numpy as np
from numba.core import config as numba_config

from charrnn.kernels.stepgemm import AVX512, block_columns, pack

HUGE_PAGE = 1 << 21
STRIP = block_columns(4)  # float32 columns per strip of a packed operand (charrnn.kernels.stepgemm)


# ----------------------------------------------------------------------------------------------
# Preparing the weights (Python, once per model).


def part_count(hidden: int, gates: int, threads: int, packed: bool) -> int:
    """Parts the units are split in: `threads` where H splits evenly into them (and, for the
    packed product, each part's G*Hp columns into whole strips), else 1."""
    if threads < 2 or hidden % threads:
        return 1
    if packed and (gates * (hidden // threads)) % STRIP:
        return 1
    return threads


def split_weights(arrays: dict, cell_gates: int, layers: int, hidden: int, vocab_size: int, parts: int, packed: bool):
    """(weights (parts, S') float32, layout (L + 1, 4) int64): `arrays` (name -> float32 array,
    as charrnn.model.params names them) cut in the parts' buffers (see the module docstring), each
    part's share of the output layer (output_operand) at its end: layout[L] is (its start, and
    its shape (a, b, c))."""
    G, H = cell_gates, hidden
    Hp = H // parts
    width = G * Hp
    strip = STRIP
    layout = np.full((layers, 4), -1, dtype=np.int64)  # (L, 4)
    position = 0
    for layer in range(layers):
        rows = vocab_size if layer == 0 else H
        for slot, size in enumerate((rows * width, H * width, width, Hp if f"b_hn.{layer}" in arrays else 0)):
            if size:
                layout[layer, slot] = position
                position += size
    output = output_operand(arrays["V"], packed, parts)  # (parts, a, b, c)
    layout = np.concatenate([layout, [[position, *output.shape[1:]]]])  # row L: V's part
    weights = part_buffers(parts, position + output[0].size)  # (parts, >= S)
    for p in range(parts):
        columns = np.concatenate([np.arange(g * H + p * Hp, g * H + (p + 1) * Hp) for g in range(G)])  # (G*Hp,)
        buffer = weights[p]
        for layer in range(layers):
            u0, w0, b0, bhn0 = layout[layer]
            U = np.ascontiguousarray(arrays[f"U.{layer}"][:, columns], dtype=np.float32)
            W = np.ascontiguousarray(arrays[f"W.{layer}"][:, columns], dtype=np.float32)
            if layer == 0:
                buffer[u0 : u0 + U.size] = U.ravel()
            else:
                _store_operand(U, buffer[u0 : u0 + U.size], packed, strip)
            _store_operand(W, buffer[w0 : w0 + W.size], packed, strip)
            buffer[b0 : b0 + width] = arrays[f"b.{layer}"][columns]
            if bhn0 >= 0:
                buffer[bhn0 : bhn0 + Hp] = arrays[f"b_hn.{layer}"][p * Hp : (p + 1) * Hp]
        buffer[position : position + output[p].size] = output[p].ravel()
    return weights, layout


def l2_cache_bytes() -> int:
    """The L2 cache of one core (Linux's sysfs), or 1 MiB where it cannot be read."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return 1 << 20


def part_buffers(parts: int, size: int) -> np.ndarray:
    """Zeroed float32 (parts, S') with S' >= size: where a part's weights fit in L2, each part's
    row starts on a 2 MB page of its own, asked for as a huge page (Linux's transparent huge pages,
    madvise). A part's weights are read from end to end at every character; on 4 KB pages the
    hardware prefetcher stops at each page's end, and pages placed at random can crowd some of
    L2's sets. Measured on the Xeon of BENCHMARKS.md, one 512-unit vanilla stream ran at 105-115k
    or 125-135k chars/s depending on the process (its pages), and at 127-134k on huge pages; a
    GRU's 41-46k went to 48-49k. An LSTM's half (2.1 MB, more than L2) ran 10% slower on them,
    so larger parts keep ordinary pages."""
    nbytes = size * 4
    if not hasattr(mmap, "MADV_HUGEPAGE") or nbytes > l2_cache_bytes():
        return np.zeros((parts, size), dtype=np.float32)
    row = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    region = mmap.mmap(-1, parts * row + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # zeroed
    raw = np.frombuffer(region, dtype=np.uint8)  # keeps the mapping alive
    start = (-raw.ctypes.data) % HUGE_PAGE
    with contextlib.suppress(OSError):  # huge pages unsupported: fine
        region.madvise(mmap.MADV_HUGEPAGE, start, parts * row)
    return raw[start : start + parts * row].view(np.float32).reshape(parts, row // 4)


def _store_operand(M, out, packed, strip):
    """M (H, N) into the 1-D slice `out`: packed in strips (N/strip, H, strip), or as it is."""
    if packed:
        pack(M, out.reshape(M.shape[1] // strip, M.shape[0], strip))
    else:
        out[:] = M.ravel()


def output_operand(V: np.ndarray, packed: bool, parts: int) -> np.ndarray:
    """V (H, vocab) as the logits' kernel reads it, its columns padded with zeros to C, a
    multiple of `parts` (of 32 * parts where packed), and cut in `parts` ranges of Cp = C / parts:
    packed, (parts, Cp / 32, H, 32), part p's columns in strips; else (parts, 1, Cp, H), part p's
    columns as rows of V transposed."""
    hidden, vocab_size = V.shape
    unit = STRIP * parts if packed else parts
    padded = -(-vocab_size // unit) * unit
    Cp = padded // parts
    wide = np.zeros((hidden, padded), dtype=np.float32)  # (H, C)
    wide[:, :vocab_size] = V
    if not packed:
        return np.ascontiguousarray(wide.T.reshape(parts, 1, Cp, hidden))  # (parts, 1, Cp, H)
    strip = STRIP
    out = np.zeros((parts, Cp // strip, hidden, strip), dtype=np.float32)  # (parts, Cp/32, H, 32)
    for p in range(parts):
        pack(np.ascontiguousarray(wide[:, p * Cp : (p + 1) * Cp]), out[p])
    return out


def packs(hidden: int, gates: int, parts: int) -> bool:
    """Whether the register-blocked product runs on the parts' columns (AVX-512, whole strips;
    compiled code only). Without AVX-512 step_product hands OpenBLAS the plain matrix, so nothing
    is packed, even where the columns make exactly one strip."""
    width = gates * (hidden // parts)
    return AVX512 and width % STRIP == 0 and not numba_config.DISABLE_JIT
