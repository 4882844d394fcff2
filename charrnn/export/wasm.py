"""A WebAssembly module (SIMD, 128-bit) with one function, assembled here byte by byte, for the
exported page's matrix-vector products:

    mv(x, rows, w, cols, out):  out[0:cols] += x[0:rows] @ W,  W row-major (rows x cols) at w

(byte addresses into the imported memory "env"."mem"; rows and cols multiples of 4). Four rows
at a time, four columns per SIMD lane group: out += x0*W[i] + x1*W[i+1] + x2*W[i+2] + x3*W[i+3].
Plain JavaScript reached 140-210 characters a second for the bundled LSTM in Chromium here; this,
up to 1,600 on the same busy machine (BENCHMARKS.md). Browsers without WebAssembly SIMD get the JavaScript loop.
"""

from __future__ import annotations


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _name(text: str) -> bytes:
    data = text.encode("utf-8")
    return _uleb(len(data)) + data


def _section(code: int, payload: bytes) -> bytes:
    return bytes([code]) + _uleb(len(payload)) + payload


# opcodes
GET, SET, TEE = 0x20, 0x21, 0x22
I32_CONST, I32_ADD, I32_SHL, I32_GE_U = 0x41, 0x6A, 0x74, 0x4F
BLOCK, LOOP, BR, BR_IF, END, VOID = 0x02, 0x03, 0x0C, 0x0D, 0x0B, 0x40
F32_LOAD = 0x2A
SIMD = 0xFD
V128_LOAD, V128_STORE, F32X4_SPLAT, F32X4_ADD, F32X4_MUL = 0x00, 0x0B, 0x13, 0xE4, 0xE6
I32, V128 = 0x7F, 0x7B

# locals: parameters x, rows, w, cols, out; then i, j, cb, r0..r3 (i32) and x0..x3 (v128)
X, ROWS, W, COLS, OUT, I, J, CB, R0, R1, R2, R3, X0 = range(13)


def _simd(op: int) -> bytes:
    return bytes([SIMD]) + _uleb(op)


def _mv_body() -> bytes:
    c = bytearray()
    get = lambda n: c.extend([GET, n])
    set_ = lambda n: c.extend([SET, n])
    # cb = cols * 4 (a row's bytes); i = 0
    get(COLS)
    c.extend([I32_CONST])
    c.extend(_sleb(2))
    c.append(I32_SHL)
    set_(CB)
    c.extend([I32_CONST])
    c.extend(_sleb(0))
    set_(I)
    c.extend([BLOCK, VOID, LOOP, VOID])
    get(I)
    get(ROWS)
    c.append(I32_GE_U)
    c.extend([BR_IF, 1])
    # x0..x3 = splat(x[i + k]);  x advances 16 bytes per group of rows
    for k in range(4):
        get(X)
        c.extend([F32_LOAD, 2])
        c.extend(_uleb(4 * k))
        c.extend(_simd(F32X4_SPLAT))
        set_(X0 + k)
    # r0 = w, r1 = r0 + cb, r2 = r1 + cb, r3 = r2 + cb
    get(W)
    set_(R0)
    for k in range(1, 4):
        get(R0 + k - 1)
        get(CB)
        c.append(I32_ADD)
        set_(R0 + k)
    c.extend([I32_CONST])
    c.extend(_sleb(0))
    set_(J)
    c.extend([BLOCK, VOID, LOOP, VOID])
    get(J)
    get(CB)
    c.append(I32_GE_U)
    c.extend([BR_IF, 1])
    # store address: out + j
    get(OUT)
    get(J)
    c.append(I32_ADD)
    # out[j:j+4]
    get(OUT)
    get(J)
    c.append(I32_ADD)
    c.extend(_simd(V128_LOAD))
    c.extend([2, 0])
    for k in range(4):
        get(R0 + k)
        get(J)
        c.append(I32_ADD)
        c.extend(_simd(V128_LOAD))
        c.extend([2, 0])
        get(X0 + k)
        c.extend(_simd(F32X4_MUL))
        c.extend(_simd(F32X4_ADD))
    c.extend(_simd(V128_STORE))
    c.extend([2, 0])
    get(J)
    c.extend([I32_CONST])
    c.extend(_sleb(16))
    c.append(I32_ADD)
    set_(J)
    c.extend([BR, 0, END, END])
    # w = r3 + cb; x += 16; i += 4
    get(R3)
    get(CB)
    c.append(I32_ADD)
    set_(W)
    get(X)
    c.extend([I32_CONST])
    c.extend(_sleb(16))
    c.append(I32_ADD)
    set_(X)
    get(I)
    c.extend([I32_CONST])
    c.extend(_sleb(4))
    c.append(I32_ADD)
    set_(I)
    c.extend([BR, 0, END, END])
    c.append(END)
    locals_ = _uleb(2) + _uleb(7) + bytes([I32]) + _uleb(4) + bytes([V128])
    body = locals_ + bytes(c)
    return _uleb(len(body)) + body


UNROLL = 2  # mv8's groups of 4 columns per iteration

# mv8's locals: parameters x, rows, w, out; then i, j (i32), a, o (i32), x0..x7 (v128)
X8, ROWS8, W8, OUT8, I8, J8, A8, O8, Y0 = range(9)
ACC = Y0 + 8  # the relaxed version's accumulators
F32X4_RELAXED_MADD = 0x105  # relaxed SIMD: a * b + c, fused or not as the machine does


def _mv8_body(cols: int, relaxed: bool) -> bytes:
    """mv for a fixed number of columns (a multiple of 8), eight rows at a time: the rows' and
    the output's addresses are constant offsets from one pointer."""
    c = bytearray()
    get = lambda n: c.extend([GET, n])
    set_ = lambda n: c.extend([SET, n])
    const = lambda n: c.extend([I32_CONST, *_sleb(n)])
    cb = 4 * cols
    const(0)
    set_(I8)
    c.extend([BLOCK, VOID, LOOP, VOID])
    get(I8)
    get(ROWS8)
    c.append(I32_GE_U)
    c.extend([BR_IF, 1])
    for k in range(8):
        get(X8)
        c.extend([F32_LOAD, 2])
        c.extend(_uleb(4 * k))
        c.extend(_simd(F32X4_SPLAT))
        set_(Y0 + k)
    const(0)
    set_(J8)
    c.extend([BLOCK, VOID, LOOP, VOID])
    get(J8)
    const(cb)
    c.append(I32_GE_U)
    c.extend([BR_IF, 1])
    get(W8)
    get(J8)
    c.append(I32_ADD)
    set_(A8)  # a = w + j: row 0's columns
    get(OUT8)
    get(J8)
    c.append(I32_ADD)
    set_(O8)  # o = out + j
    for half in range(UNROLL):  # 4 columns each
        at = 16 * half
        if relaxed:
            # two chains of fused multiply-adds: out + p0 + .. + p3, and p4 + .. + p7
            first, second = ACC + 2 * half, ACC + 2 * half + 1
            get(O8)
            c.extend(_simd(V128_LOAD))
            c.extend([2])
            c.extend(_uleb(at))
            set_(first)
            get(A8)
            c.extend(_simd(V128_LOAD))
            c.extend([2])
            c.extend(_uleb(4 * cb + at))
            get(Y0 + 4)
            c.extend(_simd(F32X4_MUL))
            set_(second)
            for k in (0, 5, 1, 6, 2, 7, 3):
                acc = first if k < 4 else second
                get(A8)
                c.extend(_simd(V128_LOAD))
                c.extend([2])
                c.extend(_uleb(k * cb + at))
                get(Y0 + k)
                get(acc)
                c.extend(_simd(F32X4_RELAXED_MADD))
                set_(acc)
            get(O8)
            get(first)
            get(second)
            c.extend(_simd(F32X4_ADD))
            c.extend(_simd(V128_STORE))
            c.extend([2])
            c.extend(_uleb(at))
            continue
        get(O8)
        get(O8)
        c.extend(_simd(V128_LOAD))
        c.extend([2])
        c.extend(_uleb(at))

        def product(k, at=at):
            get(A8)
            c.extend(_simd(V128_LOAD))
            c.extend([2])
            c.extend(_uleb(k * cb + at))
            get(Y0 + k)
            c.extend(_simd(F32X4_MUL))

        # ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)): short chains of additions
        for quad in (0, 4):
            product(quad)
            product(quad + 1)
            c.extend(_simd(F32X4_ADD))
            product(quad + 2)
            product(quad + 3)
            c.extend(_simd(F32X4_ADD))
            c.extend(_simd(F32X4_ADD))
        c.extend(_simd(F32X4_ADD))
        c.extend(_simd(F32X4_ADD))  # out + the sum
        c.extend(_simd(V128_STORE))
        c.extend([2])
        c.extend(_uleb(at))
    get(J8)
    const(16 * UNROLL)
    c.append(I32_ADD)
    set_(J8)
    c.extend([BR, 0, END, END])
    get(W8)
    const(8 * cb)
    c.append(I32_ADD)
    set_(W8)
    get(X8)
    const(32)
    c.append(I32_ADD)
    set_(X8)
    get(I8)
    const(8)
    c.append(I32_ADD)
    set_(I8)
    c.extend([BR, 0, END, END])
    c.append(END)
    locals_ = _uleb(2) + _uleb(4) + bytes([I32]) + _uleb(8 + 2 * UNROLL) + bytes([V128])
    body = locals_ + bytes(c)
    return _uleb(len(body)) + body


def module(cols: int = 8, min_pages: int = 1, relaxed: bool = False) -> bytes:
    """The module's bytes: `mv` (any shape of multiples of 4) and `mv8` (`cols` columns, a multiple
    of 8; rows a multiple of 8); `relaxed` builds mv8 on relaxed SIMD's fused multiply-add
    (Chromium 114 and later; about 15% faster here, its rounding the machine's). It imports env.mem
    (a memory of at least `min_pages` 64 KiB pages)."""
    if cols % (4 * UNROLL):
        raise ValueError(f"cols must be a multiple of {4 * UNROLL}")
    types = _section(
        1,
        _uleb(2)
        + bytes([0x60])
        + _uleb(5)
        + bytes([I32] * 5)
        + _uleb(0)
        + bytes([0x60])
        + _uleb(4)
        + bytes([I32] * 4)
        + _uleb(0),
    )
    imports = _section(2, _uleb(1) + _name("env") + _name("mem") + bytes([0x02, 0x00]) + _uleb(min_pages))
    functions = _section(3, _uleb(2) + _uleb(0) + _uleb(1))
    exports = _section(7, _uleb(2) + _name("mv") + bytes([0x00]) + _uleb(0) + _name("mv8") + bytes([0x00]) + _uleb(1))
    code = _section(10, _uleb(2) + _mv_body() + _mv8_body(cols, relaxed))
    return b"\0asm" + (1).to_bytes(4, "little") + types + imports + functions + exports + code
