"""Two threads inside compiled code waiting on each other: a spin barrier over int64 counters.

The sampler splits each step's product by columns over two threads that run the whole chunk of
characters in one kernel call each (charrnn.kernels.sampler); between layers each waits for the
other's half of the new state. A wait there lasts about a microsecond, far less than a condition
variable's wake-up, so it spins on an atomic counter; when the other thread is slow to come (the
machine is busy, or it has not started yet) it yields the core after a while instead of spinning
through the other thread's time slice. It reports how long it waited, so that the caller can
tell a busy machine (where the threads wait for each other's time slices) from a quiet one.

`counters` is an int64 array (threads * COUNTER_STRIDE,): thread t's counter at t * COUNTER_STRIDE,
a cache line pair apart, so that a thread's writes never evict the line the other one polls.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

COUNTER_STRIDE = 16  # int64s: 128 bytes between two threads' counters
# Waits are timed with the CPU's cycle counter (x86's time stamp counter, which runs at a fixed
# rate of a few GHz). A thread spins for about 50 us, then yields the core between checks. (A
# `pause` takes 10 ns on the Xeon of BENCHMARKS.md and up to 140 cycles elsewhere, so a count of
# pauses is no clock.)
CYCLES_BEFORE_YIELD = 150_000
SPINS_BEFORE_YIELD = 100_000  # where the counter reads 0 (no cycle counter): yield anyway
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

_sched_yield = types.ExternalFunction("sched_yield", types.intc())


@intrinsic
def load_acquire(typingctx, array, index):
    """array[index] read with acquire ordering (array int64, C-contiguous)."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        values = context.make_array(sig.args[0])(context, builder, args[0])
        pointer = builder.gep(values.data, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(array, types.intp), codegen


@intrinsic
def store_release(typingctx, array, index, value):
    """array[index] = value with release ordering: every write before it is seen by a thread
    that reads this value with load_acquire."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        values = context.make_array(sig.args[0])(context, builder, args[0])
        pointer = builder.gep(values.data, [args[1]])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()

    return types.void(array, types.intp, types.int64), codegen


@intrinsic
def cpu_relax(typingctx):
    """The spin-wait hint (x86 `pause`): lets the other hyperthread run and saves power."""

    def codegen(context, builder, sig, args):
        if _X86:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(pause, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def cycle_counter(typingctx):
    """The CPU's cycle counter (llvm.readcyclecounter: rdtsc on x86; 0 where there is none)."""

    def codegen(context, builder, sig, args):
        read = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter"
        )
        return builder.call(read, [])

    return types.int64(), codegen


@njit(cache=True, nogil=True)
def arrive_and_wait(counters, me, epoch):
    """Thread `me` has done its part of round `epoch` (1, 2, ...): say so, then wait until every
    other thread has too. Counters start at 0 for a new run. Returns the cycles spent waiting."""
    store_release(counters, me * COUNTER_STRIDE, epoch)
    start = cycle_counter()
    for other in range(counters.shape[0] // COUNTER_STRIDE):
        if other == me:
            continue
        spins = 0
        while load_acquire(counters, other * COUNTER_STRIDE) < epoch:
            spins += 1
            if spins < SPINS_BEFORE_YIELD and cycle_counter() - start < CYCLES_BEFORE_YIELD:
                cpu_relax()
            else:
                _sched_yield()
    return cycle_counter() - start
