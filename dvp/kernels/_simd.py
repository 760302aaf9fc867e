"""Explicit SIMD for the hottest loop of the default extractor (LLVM vector IR via numba).

`neighbor_peak40` is ``neighbor_average_maximum``'s inner step for one pixel of a
40-sample camera (LSTCam, NectarCam): the float32 sum of the pixel's waveform times the
local weight and of its 3 to 6 neighbours' waveforms, in ctapipe's order, and the index of
its first maximum. numba's auto-vectoriser keeps this loop in 256-bit registers and needs an
int64 packing trick for a first-index argmax; written as three vectors of 16, 16 and 8
float32 lanes with integer max/min reductions it takes half the instructions (26 -> 14 us
per LSTCam event on the 2-core AMD EPYC of benchmarks/RESULTS.md).

Each lane does exactly the scalar code's float32 operations in the same order (no fast-math
flags), so the sums are bit-identical to ctapipe's. The maximum is found on the raw bits as
int32, which orders positive floats correctly; where the maximum is <= +0 (negative floats
and -0 are out of order as integers) or a sum is NaN the function returns -1 and the caller
takes its plain path. On CPUs without AVX-512 LLVM splits the vectors; the result is the
same.

The plain-Python twin runs under ``.py_func`` and in tests.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

N_SAMPLES = 40
_PARTS = ((16, 0), (16, 16), (8, 32))  # (lanes, first sample) covering 40 samples

_I1, _I32, _I64, _F32 = ir.IntType(1), ir.IntType(32), ir.IntType(64), ir.FloatType()
_V = ir.VectorType


def neighbor_peak40(w, p, indices, a, n_nb, local_weight):
    """First argmax of ``w[p] * local_weight + w[indices[a]] + ... + w[indices[a + n_nb - 1]]``.

    Parameters
    ----------
    w : float32 array (n_pixels, 40), C-contiguous
        One event's waveforms.
    p : int
        The pixel.
    indices : int32 or int64 array
        Neighbour indices (CSR); the pixel's neighbours are ``indices[a:a + n_nb]``.
    a : int
        First neighbour's position in ``indices``.
    n_nb : int, 3..6
        Number of neighbours; a compile-time constant in jitted callers.
    local_weight : float32

    Returns
    -------
    int
        The sample index of the first maximum, or -1 where the maximum is <= +0 or a sum is
        NaN (the caller then applies ctapipe's loop as written).
    """
    v = w[p] * np.float32(local_weight)
    for k in range(n_nb):
        v = v + w[indices[a + k]]
    if np.isnan(v).any():
        return -1
    bits = v.view(np.int32)
    m = bits.max()
    if m <= 0:
        return -1
    return int(np.flatnonzero(bits == m)[0])


def _call(builder, name, ret, *args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [x.type for x in args]), name)
    return builder.call(fn, list(args))


def _splat(builder, x, n):
    vt = _V(x.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(_V(_I32, n), [0] * n))


def _halves(builder, v):
    n = v.type.count // 2
    undef = ir.Constant(v.type, ir.Undefined)
    lo = builder.shuffle_vector(v, undef, ir.Constant(_V(_I32, n), list(range(n))))
    hi = builder.shuffle_vector(v, undef, ir.Constant(_V(_I32, n), list(range(n, 2 * n))))
    return lo, hi


def _fold(builder, op, v16, v8):
    """``op`` over the 16 + 8 lanes of two vectors, elementwise down to 8 lanes."""
    lo, hi = _halves(builder, v16)
    name = f"llvm.{op}.v8i32"
    return _call(builder, name, _V(_I32, 8), _call(builder, name, _V(_I32, 8), lo, hi), v8)


def _peak40_codegen(n_nb):
    def codegen(context, builder, signature, args):
        w_ty, p_ty, ind_ty, a_ty, _, lw_ty = signature.args
        w = context.make_array(w_ty)(context, builder, args[0])
        ind = context.make_array(ind_ty)(context, builder, args[2])
        row_bytes = builder.extract_value(w.strides, 0)
        data = builder.bitcast(w.data, ir.IntType(8).as_pointer())
        ind_ir = context.get_value_type(ind_ty.dtype)
        ip = builder.bitcast(ind.data, ind_ir.as_pointer())
        a = context.cast(builder, args[3], a_ty, types.int64)
        pixels = [context.cast(builder, args[1], p_ty, types.int64)]
        for k in range(n_nb):
            j = builder.load(builder.gep(ip, [builder.add(a, ir.Constant(_I64, k))]))
            pixels.append(builder.sext(j, _I64) if ind_ir.width < 64 else j)
        rows = [builder.gep(data, [builder.mul(j, row_bytes)]) for j in pixels]
        lw = context.cast(builder, args[5], lw_ty, types.float32)
        sums = []
        for n, first in _PARTS:
            vt = _V(_F32, n)

            def load(row):
                ptr = builder.gep(row, [ir.Constant(_I64, 4 * first)])
                return builder.load(builder.bitcast(ptr, vt.as_pointer()), align=4)

            # ctapipe's order: own waveform times the weight, then each neighbour
            v = builder.fmul(load(rows[0]), _splat(builder, lw, n))
            for row in rows[1:]:
                v = builder.fadd(v, load(row))
            sums.append(v)
        s0, s1, s2 = sums
        uno16 = builder.or_(builder.fcmp_unordered("uno", s0, s0), builder.fcmp_unordered("uno", s1, s1))
        lo, hi = _halves(builder, uno16)
        uno8 = builder.or_(builder.or_(lo, hi), builder.fcmp_unordered("uno", s2, s2))
        nan = _call(builder, "llvm.vector.reduce.or.v8i1", _I1, uno8)
        bits = [builder.bitcast(v, _V(_I32, v.type.count)) for v in sums]
        top = _fold(builder, "smax", _call(builder, "llvm.smax.v16i32", _V(_I32, 16), bits[0], bits[1]), bits[2])
        m = _call(builder, "llvm.vector.reduce.smax.v8i32", _I32, top)
        # first index holding the maximum: lane index where equal, else past the end
        firsts = []
        for (n, first), b in zip(_PARTS, bits):
            eq = builder.icmp_signed("==", b, _splat(builder, m, n))
            firsts.append(builder.select(eq, ir.Constant(_V(_I32, n), list(range(first, first + n))),
                                         ir.Constant(_V(_I32, n), [N_SAMPLES] * n)))
        low = _fold(builder, "umin", _call(builder, "llvm.umin.v16i32", _V(_I32, 16), firsts[0], firsts[1]),
                    firsts[2])
        idx = _call(builder, "llvm.vector.reduce.umin.v8i32", _I32, low)
        ok = builder.and_(builder.not_(nan), builder.icmp_signed(">", m, ir.Constant(_I32, 0)))
        return builder.select(ok, builder.zext(idx, _I64), ir.Constant(_I64, -1))

    return codegen


@intrinsic(prefer_literal=True)
def _neighbor_peak40_intrinsic(typingctx, w, p, indices, a, n_nb, local_weight):
    if not (isinstance(w, types.Array) and w.ndim == 2 and w.dtype == types.float32 and w.layout == "C"
            and isinstance(indices, types.Array) and indices.ndim == 1 and indices.layout == "C"
            and indices.dtype in (types.int32, types.int64) and isinstance(p, types.Integer)
            and isinstance(a, types.Integer) and isinstance(n_nb, types.IntegerLiteral)
            and 3 <= n_nb.literal_value <= 6 and isinstance(local_weight, (types.Float, types.Integer))):
        return None
    return types.int64(w, p, indices, a, n_nb, local_weight), _peak40_codegen(n_nb.literal_value)


@overload(neighbor_peak40, prefer_literal=True)
def _neighbor_peak40_overload(w, p, indices, a, n_nb, local_weight):
    if isinstance(n_nb, types.IntegerLiteral) and isinstance(w, types.Array) and w.layout == "C":
        return lambda w, p, indices, a, n_nb, local_weight: _neighbor_peak40_intrinsic(w, p, indices, a, n_nb,
                                                                                      local_weight)
