"""Elementwise math of the kernels: fast vectorisable approximations in float32, exact in float64.

    fast_exp(x), fast_tanh(x), fast_sigmoid(x)

In float32 they are polynomial approximations (relative error of exp below 2e-7, absolute error
of tanh and sigmoid below 3e-7) that LLVM vectorises; in float64 they are the library functions,
so the float64 gradient checks test everything else of the same code. Each is a plain Python
function (called on numpy float32 or float64 scalars it computes the same approximation, so code
run with NUMBA_DISABLE_JIT=1 gives the same results to rounding: compiled code may fuse a
multiply and an add) with a Numba `@overload` that compiled code inlines. A NaN argument gives a
NaN (the kernels' fastmath flags leave out nnan and ninf so that a NaN loss stays visible).

This module imports only numpy and numba (the sampler imports it alone).
"""

from __future__ import annotations

import math
from typing import Literal, TypedDict

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# Without "nnan"/"ninf": a NaN loss must stay visible. `error_model="numpy"` drops the division-by-
# zero check that would otherwise keep the elementwise loops from vectorising.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


class FastOptions(TypedDict):
    """njit's keywords for the elementwise kernels: `@njit(cache=True, **FAST)`."""

    fastmath: set[str]
    error_model: Literal["numpy"]


FAST: FastOptions = {"fastmath": FASTMATH, "error_model": "numpy"}

# The same flags without "reassoc", for code whose rounding must not depend on the target. With
# "reassoc", LLVM may regroup a chain of adds as it likes: it merged exp's two-constant ln 2 back
# into one (x - n*(HI + LO): an error of n * 2e-9 in r, 3e-7 relative near exp(-87) with FMA and
# 4e-6 without), and x86's backend regroups a chain of adds for latency, differently in a loop's
# vector body and in its scalar remainder, so that a column's value depended on which of the two
# computed it (and on the width of the loop, where there is no FMA to fuse the chain: generic
# x86-64's SSE2). Without it every add stays where the source puts it ("contract" still fuses a
# multiply and the add after it into an FMA where the target has one). Without "arcp" too: it let
# tanh's two divisions by 1 + e become multiplications by a reciprocal where SSE2 has no blend.
FASTMATH_ORDERED = FASTMATH - {"reassoc", "arcp"}

_F32 = np.float32


def _pow2_f32(n):
    """2**n for an integral float32 n in [-126, 127] (exact); NaN for NaN."""
    if n != n:
        return n
    return np.ldexp(_F32(1.0), int(n))


@intrinsic
def _pow2_f32_bits(typingctx, n):
    """2**n built directly from the exponent bits."""
    if n != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        exponent = builder.add(builder.fptosi(args[0], i32), i32(127))
        return builder.bitcast(builder.shl(exponent, i32(23)), ir.FloatType())

    return types.float32(types.float32), codegen


@overload(_pow2_f32, inline="always")
def _pow2_f32_overload(n):
    if n == types.float32:
        return lambda n: _pow2_f32_bits(n)
    return None


_EXP_LO, _EXP_HI = _F32(-87.0), _F32(88.0)
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693145751953125)  # ln 2 split in two so that n * _LN2_HI is exact
_LN2_LO = _F32(1.4286068203094173e-06)
_HALF = _F32(0.5)
_ONE = _F32(1.0)
_ZERO = _F32(0.0)
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7 = (_F32(1.0 / math.factorial(i)) for i in range(8))
_TANH_SMALL = _F32(0.125)
_MINUS_TWO = _F32(-2.0)
# Taylor series of tanh near 0: x - x^3/3 + 2x^5/15 - 17x^7/315 (error < 1e-10 below 0.125).
_TANH_C3, _TANH_C5, _TANH_C7 = _F32(-1.0 / 3.0), _F32(2.0 / 15.0), _F32(-17.0 / 315.0)


@njit(cache=True, fastmath=FASTMATH_ORDERED, error_model="numpy")
def exp_f32(x):
    """exp(x) for float32, relative error below 2e-7: x = n ln2 + r, exp(r) by its Taylor series
    to degree 7 on |r| <= ln2/2, times 2^n from the exponent bits. Clamped to [-87, 88] first
    (a NaN stays NaN). Compiled without "reassoc" (FASTMATH_ORDERED) so that r keeps ln 2's two
    parts apart: n * _LN2_HI is exact, and the rounding of ln 2 does not grow with n."""
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(x * _LOG2E + _HALF)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _C0 + r * (_C1 + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7))))))
    return p * _pow2_f32(n)


@njit(cache=True, fastmath=FASTMATH_ORDERED, error_model="numpy")
def tanh_f32(x):
    """tanh for float32 from one exp: (1 - e) / (1 + e) with e = exp(-2|x|), and the Taylor series
    near 0 where that quotient would lose relative precision. Absolute error below 2e-7."""
    ax = abs(x)
    e = exp_f32(_MINUS_TWO * ax)
    q = (_ONE - e) / (_ONE + e)
    big = -q if x < _ZERO else q
    x2 = x * x
    small = x + x * x2 * (_TANH_C3 + x2 * (_TANH_C5 + x2 * _TANH_C7))
    return big if ax >= _TANH_SMALL else small  # a NaN takes `small`, which is NaN


@njit(cache=True, fastmath=FASTMATH_ORDERED, error_model="numpy")
def sigmoid_f32(x):
    """1 / (1 + exp(-x)) for float32 with the fast exp (absolute error below 2e-7)."""
    return _ONE / (_ONE + exp_f32(-x))


def fast_exp(x):
    """exp; the fast approximation for float32, the exact one otherwise."""
    if isinstance(x, np.float32):
        return _F32(exp_f32(x))  # (a compiled call returns a Python float)
    return math.exp(x)


def fast_tanh(x):
    """tanh; the fast approximation for float32, the exact one otherwise."""
    if isinstance(x, np.float32):
        return _F32(tanh_f32(x))
    return math.tanh(x)


def fast_sigmoid(x):
    """The logistic function 1 / (1 + exp(-x)); the fast exp for float32, the exact one
    otherwise."""
    if isinstance(x, np.float32):
        return _F32(sigmoid_f32(x))
    return 1.0 / (1.0 + math.exp(-x))


@overload(fast_exp, inline="always")
def _fast_exp_overload(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: math.exp(x)


@overload(fast_tanh, inline="always")
def _fast_tanh_overload(x):
    if x == types.float32:
        return lambda x: tanh_f32(x)
    return lambda x: math.tanh(x)


@overload(fast_sigmoid, inline="always")
def _fast_sigmoid_overload(x):
    if x == types.float32:
        return lambda x: sigmoid_f32(x)
    return lambda x: 1.0 / (1.0 + math.exp(-x))
