"""Explicit SIMD for the two hot loops of the default extractor (LLVM vector IR via numba).

`neighbor_peak40` is ``neighbor_average_maximum``'s inner step for one pixel of a
40-sample camera (LSTCam, NectarCam): the float32 sum of the pixel's waveform times the
local weight and of its 3 to 6 neighbours' waveforms, in ctapipe's order, and the index of
its first maximum. numba's auto-vectoriser keeps this loop in 256-bit registers and needs an
int64 packing trick for a first-index argmax; written as three vectors of 16, 16 and 8
float32 lanes with integer max/min reductions it takes half the instructions (the peak
search went from 26 to 16-18 us per LSTCam event on the 2-core AMD EPYC of
benchmarks/RESULTS.md).

Each lane does exactly the scalar code's float32 operations in the same order (no fast-math
flags), so the sums are bit-identical to ctapipe's. The maximum is found on the raw bits as
int32, which orders positive floats correctly; where the maximum is <= +0 (negative floats
and -0 are out of order as integers) or a sum is NaN the function returns -1 and the caller
takes its plain path. On CPUs without AVX-512 LLVM splits the vectors; the result is the
same.

`window_sums8` is ``extract_around_peak`` for eight consecutive pixels: each pixel's
window (7 samples around its own peak) is read with one masked 8-lane load (the mask clips
the window to the readout, as ctapipe's slice does), the 8 x 8 block is transposed so that a
lane holds a pixel, and the float64 sums run down the samples in ctapipe's order, one pixel
per lane, then the peak-time division, the float32 roundings and the integration
correction. Clipped samples add exactly +0.0, which leaves every sum bit-identical (a sum
that starts at +0.0 never becomes -0.0 under round-to-nearest). numba's scalar loop took 13
and this takes 8 us per LSTCam event.

Each function has a plain-Python twin (the function itself) that runs under ``.py_func``
and in tests; numba compiles calls to it into the vector code. The LLVM intrinsic names
(``llvm.masked.load.v8f32.p0``) are those of opaque pointers, LLVM 15 and later: numba
0.68 and later (pyproject.toml).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

N_SAMPLES = 40
_PARTS = ((16, 0), (16, 16), (8, 32))  # (lanes, first sample) covering 40 samples

_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_F32, _F64 = ir.FloatType(), ir.DoubleType()
_L = 8  # pixels per `window_sums8` call
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


def _vconst(t, values):
    values = list(values)
    return ir.Constant(_V(t, len(values)), values)


def _lanes_ptr(builder, data, elem, index, n):
    """Pointer to the ``n`` elements of type ``elem`` at ``index`` of the array data ``data``."""
    ptr = builder.gep(builder.bitcast(data, elem.as_pointer()), [index])
    return builder.bitcast(ptr, _V(elem, n).as_pointer())


def _splat(builder, x, n):
    vt = _V(x.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), _vconst(_I32, [0] * n))


def _halves(builder, v):
    n = v.type.count // 2
    undef = ir.Constant(v.type, ir.Undefined)
    lo = builder.shuffle_vector(v, undef, _vconst(_I32, range(n)))
    hi = builder.shuffle_vector(v, undef, _vconst(_I32, range(n, 2 * n)))
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
        data = builder.bitcast(w.data, _I8.as_pointer())
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
            def load(row):
                return builder.load(_lanes_ptr(builder, row, _F32, ir.Constant(_I64, first), n), align=4)

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
            firsts.append(builder.select(eq, _vconst(_I32, range(first, first + n)), _vconst(_I32, [N_SAMPLES] * n)))
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


def window_sums8(w, peaks, q, shift, width, rate, gains, correction, charge, peak_time):
    """ctapipe's ``extract_around_peak`` for pixels ``q .. q + 7`` of one event.

    Parameters
    ----------
    w : float32 array (n_pixels, n_samples), C-contiguous
    peaks : int64 array (n_pixels,)
        Peak sample of each pixel; the window is ``[peak - shift, peak - shift + width)``
        clipped to the readout.
    q : int
        First pixel; ``q + 8 <= n_pixels``.
    shift : int
    width : int, 1..8
        A compile-time constant in jitted callers.
    rate : float
        Sampling rate in GHz.
    gains : int8 array (n_pixels,)
        Selected gain channel, the index into ``correction``.
    correction : float64 array (n_channels,)
        Integration correction per channel.
    charge, peak_time : float32 arrays (n_pixels,)
        Written for the eight pixels: the corrected charge and the peak time in ns.
    """
    # the scalar kernel, pixel by pixel (imported here: dvp.kernels.extract imports this module)
    from .extract import _corrected, _window_at

    for p in range(q, q + _L):
        sm, peak_time[p] = _window_at(w, p, peaks[p], width, shift, w.shape[1], rate)
        charge[p] = _corrected(sm, correction, gains[p])


def _transpose8(builder, rows):
    """Eight <8 x float> rows to eight columns: three rounds of two-source shuffles."""
    def shuffle(a, b, idx):
        return builder.shuffle_vector(a, b, _vconst(_I32, idx))

    pairs = []  # pairs[2i], pairs[2i+1]: even and odd elements of rows 2i, 2i+1 interleaved
    for i in range(0, _L, 2):
        pairs.append(shuffle(rows[i], rows[i + 1], [0, 8, 2, 10, 4, 12, 6, 14]))
        pairs.append(shuffle(rows[i], rows[i + 1], [1, 9, 3, 11, 5, 13, 7, 15]))
    quads = {}
    for i in (0, 1, 4, 5):
        quads[i] = shuffle(pairs[i], pairs[i + 2], [0, 1, 8, 9, 4, 5, 12, 13])
        quads[i + 2] = shuffle(pairs[i], pairs[i + 2], [2, 3, 10, 11, 6, 7, 14, 15])
    cols = [None] * _L
    for i in range(4):
        cols[i] = shuffle(quads[i], quads[i + 4], [0, 1, 2, 3, 8, 9, 10, 11])
        cols[i + 4] = shuffle(quads[i], quads[i + 4], [4, 5, 6, 7, 12, 13, 14, 15])
    return cols


def _windows8_codegen(width):
    def codegen(context, builder, signature, args):
        at = signature.args
        w, peaks, gains, corr, charge, ptime = (context.make_array(at[k])(context, builder, args[k])
                                                for k in (0, 1, 6, 7, 8, 9))
        n_s = builder.extract_value(w.shape, 1)
        row_bytes = builder.extract_value(w.strides, 0)
        q = context.cast(builder, args[2], at[2], types.int64)
        shift = context.cast(builder, args[3], at[3], types.int64)
        rate = context.cast(builder, args[5], at[5], types.float64)
        data = builder.bitcast(w.data, _I8.as_pointer())
        pk = builder.load(_lanes_ptr(builder, peaks.data, _I64, q, _L), align=8)
        first = builder.sub(pk, _splat(builder, shift, _L))
        lanes = _vconst(_I64, range(_L))
        in_width = _vconst(_I1, [1 if j < width else 0 for j in range(_L)])
        zero_i = _vconst(_I64, [0] * _L)
        n_s_v = _splat(builder, n_s, _L)
        zero_f = _vconst(_F32, [0.0] * _L)
        rows = []
        for lane in range(_L):
            # pixel q + lane: samples first .. first + 7, masked to the window and the readout
            f = builder.extract_element(first, ir.Constant(_I32, lane))
            idx = builder.add(_splat(builder, f, _L), lanes)
            mask = builder.and_(builder.and_(builder.icmp_signed(">=", idx, zero_i),
                                             builder.icmp_signed("<", idx, n_s_v)), in_width)
            pixel = builder.add(q, ir.Constant(_I64, lane))
            off = builder.add(builder.mul(pixel, row_bytes), builder.mul(f, ir.Constant(_I64, 4)))
            ptr = builder.bitcast(builder.gep(data, [off]), _V(_F32, _L).as_pointer())
            rows.append(_call(builder, "llvm.masked.load.v8f32.p0", _V(_F32, _L), ptr, ir.Constant(_I32, 4),
                              mask, zero_f))
        cols = _transpose8(builder, rows)
        zero_d = _vconst(_F64, [0.0] * _L)
        sm = num = den = zero_d
        for k in range(width):
            v = builder.fpext(cols[k], _V(_F64, _L))
            sm = builder.fadd(sm, v)
            pos = builder.select(builder.fcmp_ordered(">", v, zero_d), v, zero_d)
            i = builder.sitofp(builder.add(first, _vconst(_I64, [k] * _L)), _V(_F64, _L))
            num = builder.fadd(num, builder.fmul(pos, i))
            den = builder.fadd(den, pos)
        t = builder.select(builder.fcmp_ordered(">", den, zero_d),
                           builder.fptrunc(builder.fdiv(num, den), _V(_F32, _L)), builder.sitofp(pk, _V(_F32, _L)))
        pt = builder.fptrunc(builder.fdiv(builder.fpext(t, _V(_F64, _L)), _splat(builder, rate, _L)), _V(_F32, _L))
        g = builder.sext(builder.load(_lanes_ptr(builder, gains.data, _I8, q, _L), align=1), _V(_I64, _L))
        c_addr = builder.add(_splat(builder, builder.ptrtoint(corr.data, _I64), _L),
                             builder.mul(g, _vconst(_I64, [8] * _L)))
        c = _call(builder, "llvm.masked.gather.v8f64.v8p0", _V(_F64, _L),
                  builder.inttoptr(c_addr, _V(_F64.as_pointer(), _L)), ir.Constant(_I32, 8),
                  _vconst(_I1, [1] * _L), zero_d)
        ch = builder.fptrunc(builder.fmul(builder.fpext(builder.fptrunc(sm, _V(_F32, _L)), _V(_F64, _L)), c),
                             _V(_F32, _L))
        for arr, vec in ((charge, ch), (ptime, pt)):
            builder.store(vec, _lanes_ptr(builder, arr.data, _F32, q, _L), align=4)
        return context.get_dummy_value()

    return codegen


def _c_array(t, ndim, dtype):
    return isinstance(t, types.Array) and t.ndim == ndim and t.layout == "C" and t.dtype == dtype


@intrinsic(prefer_literal=True)
def _window_sums8_intrinsic(typingctx, w, peaks, q, shift, width, rate, gains, correction, charge, peak_time):
    if not (_c_array(w, 2, types.float32) and _c_array(peaks, 1, types.int64) and _c_array(gains, 1, types.int8)
            and _c_array(correction, 1, types.float64) and _c_array(charge, 1, types.float32)
            and _c_array(peak_time, 1, types.float32) and isinstance(width, types.IntegerLiteral)
            and 1 <= width.literal_value <= _L and isinstance(q, types.Integer)
            and isinstance(shift, types.Integer) and isinstance(rate, (types.Float, types.Integer))):
        return None
    sig = types.void(w, peaks, q, shift, width, rate, gains, correction, charge, peak_time)
    return sig, _windows8_codegen(width.literal_value)


@overload(window_sums8, prefer_literal=True)
def _window_sums8_overload(w, peaks, q, shift, width, rate, gains, correction, charge, peak_time):
    if isinstance(width, types.IntegerLiteral):
        def impl(w, peaks, q, shift, width, rate, gains, correction, charge, peak_time):
            _window_sums8_intrinsic(w, peaks, q, shift, width, rate, gains, correction, charge, peak_time)
        return impl
