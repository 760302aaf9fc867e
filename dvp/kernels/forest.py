"""Evaluate a gradient-boosted forest of numerical binary trees (a LightGBM model) on feature rows.

The trees (from a LightGBM model, :func:`flatten_lightgbm`) are flat arrays: for every
internal node its feature, threshold and children (tree-local node numbers; leaves
come after the internal nodes). A row goes left when ``x[feature] <= threshold``,
LightGBM's rule for numerical splits. The raw score is the sum of the leaf outputs in
tree order, as LightGBM sums it, so predictions are LightGBM's bit for bit.

A leaf outputs its ``leaf_value``, or, in a model trained with ``linear_tree = true``,
``leaf_const + sum_i coeff_i * x[feature_i]`` summed in LightGBM's order; if one of
those ``x[feature_i]`` is NaN the leaf outputs its ``leaf_value`` instead (LightGBM's rule).
A linear leaf's output can be bounded to ``[leaf_low, leaf_high]``
(:meth:`Forest.set_leaf_bounds`, from :meth:`Forest.leaf_output_bounds` on the training
rows): a plane fitted to the rows of a leaf extrapolates without limit on rows unlike
them (protons under a gamma energy model), and the bound stops that where it starts,
per leaf, instead of only on the sum. Without bounds (the default: -inf, +inf)
predictions are LightGBM's.

Missing and near-zero values follow LightGBM's ``predict`` too: it reads every
``|x| <= 1e-35`` as 0; at a split a NaN goes to the split's default child if the split
learnt missing values (``missing_type`` NaN) and is read as 0 otherwise, and a
``missing_type`` Zero split sends 0 (and NaN) to its default child. The fast kernels walk
8 rows in lockstep without branches and need none of this, so :meth:`Forest.predict`
gives them the rows of ordinary values and a per-row kernel implementing all of it the
rest (rows holding a NaN, ±inf or a ``0 < |x| <= 1e-35``; every row for forests with
Zero splits). dvp itself predicts only rows of finite features.

Trees at most :data:`COMPLETE_MAX_DEPTH` deep (dvp's defaults: 8) are also laid out as
complete binary trees (:meth:`Forest.complete_layout`), whose kernels compute a node's
children (``2 p + 1``, ``2 p + 2``) instead of loading them and walk 16 rows at a time;
they give the child-array kernels' results bit for bit, 1.2-1.4x faster on float32 rows.

The fast kernels evaluate a linear leaf as a fixed number of terms (``Forest.coef_width``,
the most any leaf has: at most the tree depth, since LightGBM fits a leaf on the features
split on along its path), its coefficients followed by zeros: 1.25x faster on dvp's default
energy models (session 21) than looping over each leaf's own count, whose exit the CPU
cannot predict.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: rows walked through a tree together (the kernels are unrolled for 8): independent
#: walks keep the CPU busy while one row's comparison resolves, with every row's node
#: in a register
BLOCK = 8
#: rows that go through one tree, block by block, before the next tree: the tree's nodes
#: stay in the L1 cache for 16 blocks instead of one (1.05-1.21x on dvp's default models,
#: session 20); every row still adds its trees' outputs in tree order
CHUNK = 128
#: trees at most this deep are also stored as complete binary trees (position ``p``'s
#: children at ``2 p + 1`` and ``2 p + 2``, a leaf above the bottom level repeated down to
#: it): a step then computes its next node instead of loading it, and the kernels walk
#: ``CBLOCK`` rows together. 1.35-1.5x on dvp's default gammaness models (session 23);
#: deeper trees (2**depth positions each) keep the child arrays
COMPLETE_MAX_DEPTH = 10
#: rows the complete-layout kernels walk together (a multiple of BLOCK dividing CHUNK)
CBLOCK = 16
#: LightGBM's kZeroThreshold (a float literal stored as double): ``predict`` reads every
#: ``|x| <=`` this as 0
ZERO_THRESHOLD = float(np.float32(1e-35))
#: ``missing`` codes of a split (LightGBM's ``missing_type``)
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
#: the fast kernels index with unsigned integers: numba guards every signed index against
#: negative values (Python's wraparound), three instructions per access in the walk's
#: dependent chain (1.5x on the walks of dvp's default models, session 21)
U = np.uint64


@njit(inline="always")
def _step(X, r, feature, threshold, child, j):
    # leaves point to themselves (feature 0, threshold +inf), so extra steps stay put
    return U(child[U(2) * j + U(X[r, feature[j]] > threshold[j])])


@njit(inline="always")
def _walk8(X, s, feature, threshold, child, base, depth):
    """Tree-local leaf nodes (uint64) of rows ``s ... s + 7`` after ``depth`` steps from
    the root at ``base`` (``s``, ``base``, ``depth``: uint64)."""
    s1, s2, s3, s4, s5, s6, s7 = s + U(1), s + U(2), s + U(3), s + U(4), s + U(5), s + U(6), s + U(7)
    n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = U(0)
    for _ in range(depth):
        n0 = _step(X, s, feature, threshold, child, base + n0)
        n1 = _step(X, s1, feature, threshold, child, base + n1)
        n2 = _step(X, s2, feature, threshold, child, base + n2)
        n3 = _step(X, s3, feature, threshold, child, base + n3)
        n4 = _step(X, s4, feature, threshold, child, base + n4)
        n5 = _step(X, s5, feature, threshold, child, base + n5)
        n6 = _step(X, s6, feature, threshold, child, base + n6)
        n7 = _step(X, s7, feature, threshold, child, base + n7)
    return (n0, n1, n2, n3, n4, n5, n6, n7)


@njit(inline="always")
def _walk1(X, r, feature, threshold, child, base, depth):
    node = U(0)
    for _ in range(depth):
        node = _step(X, r, feature, threshold, child, base + node)
    return node


@njit(inline="always")
def _bounded(v, lo, hi):
    # comparisons, not min/max: a NaN stays NaN; infinite bounds leave v bit-identical
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


@njit(inline="always")
def _padded_leaf(X, r, leaf, leaf_const, pad_feature, pad_value, width, leaf_low, leaf_high):
    # a fixed number of terms: the loop's exit is predictable, where the true count's is not
    v = leaf_const[leaf]
    p = leaf * width
    for q in range(p, p + width):
        v += pad_value[q] * X[r, pad_feature[q]]
    return _bounded(v, leaf_low[leaf], leaf_high[leaf])


@njit(cache=True)
def _raw_score(X, feature, threshold, child, node_offset, depth, n_internal, leaf_value, leaf_offset, init, out):
    """``out`` (n,) = raw scores of rows ``X`` (n, n_features) of finite values, none with
    ``0 < |x| <= 1e-35``, constant leaves (arrays as in :class:`Forest`)."""
    n = U(X.shape[0])
    full = n - n % U(BLOCK)
    for c in range(U(0), full, U(CHUNK)):
        end = min(c + U(CHUNK), full)
        for r in range(c, end):
            out[r] = init
        for t in range(node_offset.shape[0]):
            first, n_int, base, d = U(leaf_offset[t]), U(n_internal[t]), U(node_offset[t]), U(depth[t])
            for s in range(c, end, U(BLOCK)):
                nodes = _walk8(X, s, feature, threshold, child, base, d)
                for k in range(BLOCK):   # walks end on leaves: node >= n_int
                    out[s + U(k)] += leaf_value[first + (nodes[k] - n_int)]
    for r in range(full, n):
        a = init
        for t in range(node_offset.shape[0]):
            node = _walk1(X, r, feature, threshold, child, U(node_offset[t]), U(depth[t]))
            a += leaf_value[U(leaf_offset[t]) + (node - U(n_internal[t]))]
        out[r] = a


@njit(cache=True)
def _raw_score_linear(X, feature, threshold, child, node_offset, depth, n_internal, leaf_offset,
                      leaf_const, pad_feature, pad_value, width, leaf_low, leaf_high, init, out):
    """``out`` (n,) = raw scores of rows ``X`` (n, n_features) of finite values, none with
    ``0 < |x| <= 1e-35``, linear leaves: leaf ``i`` adds ``leaf_const[i] + sum over q in
    i width ... (i + 1) width - 1 of pad_value[q] * x[pad_feature[q]]`` (the
    coefficients in LightGBM's order, then zeros), bounded to ``[leaf_low[i], leaf_high[i]]``."""
    n = U(X.shape[0])
    w = U(width)
    full = n - n % U(BLOCK)
    for c in range(U(0), full, U(CHUNK)):
        end = min(c + U(CHUNK), full)
        for r in range(c, end):
            out[r] = init
        for t in range(node_offset.shape[0]):
            first, n_int, base, d = U(leaf_offset[t]), U(n_internal[t]), U(node_offset[t]), U(depth[t])
            for s in range(c, end, U(BLOCK)):
                nodes = _walk8(X, s, feature, threshold, child, base, d)
                for k in range(BLOCK):
                    out[s + U(k)] += _padded_leaf(X, s + U(k), first + (nodes[k] - n_int), leaf_const, pad_feature,
                                                  pad_value, w, leaf_low, leaf_high)
    for r in range(full, n):
        a = init
        for t in range(node_offset.shape[0]):
            node = _walk1(X, r, feature, threshold, child, U(node_offset[t]), U(depth[t]))
            leaf = U(leaf_offset[t]) + (node - U(n_internal[t]))
            a += _padded_leaf(X, r, leaf, leaf_const, pad_feature, pad_value, w, leaf_low, leaf_high)
        out[r] = a


@njit(cache=True)
def _fill_complete(feature, threshold, threshold32, child, node_offset, depth, cnode_offset, cleaf_offset,
                   cfeature, cthreshold, cthreshold32, cleaf_node):
    """Every tree as a complete binary tree of its depth ``d``: ``2**d - 1`` positions from
    ``cnode_offset[t]`` (position ``p``'s children at ``2 p + 1``, ``2 p + 2``) with the
    feature and thresholds of the node there, and ``2**d`` bottom positions from
    ``cleaf_offset[t]`` with the tree-local leaf node each ends on. A leaf above the
    bottom level is its own children (feature 0, threshold +inf), so it repeats down."""
    for t in range(node_offset.shape[0]):
        o, d = node_offset[t], depth[t]
        n_c = (1 << d) - 1
        at = np.empty(2 * n_c + 1, np.int64)   # tree-local node at each position, level by level
        at[0] = 0
        for p in range(n_c):
            g = o + at[p]
            cfeature[cnode_offset[t] + p] = feature[g]
            cthreshold[cnode_offset[t] + p] = threshold[g]
            cthreshold32[cnode_offset[t] + p] = threshold32[g]
            at[2 * p + 1] = child[2 * g]
            at[2 * p + 2] = child[2 * g + 1]
        for q in range(n_c + 1):
            cleaf_node[cleaf_offset[t] + q] = at[n_c + q]


@njit(inline="always")
def _cstep(X, r, feature, threshold, base, p):
    return U(2) * p + U(1) + U(X[r, feature[base + p]] > threshold[base + p])


@njit(inline="always")
def _cwalk16(X, s, feature, threshold, base, depth):
    """Bottom positions (uint64, ``2**depth - 1 ...``) of rows ``s ... s + 15`` in the
    complete tree at ``base``."""
    n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = U(0)
    n8 = n9 = n10 = n11 = n12 = n13 = n14 = n15 = U(0)
    for _ in range(depth):
        n0 = _cstep(X, s + U(0), feature, threshold, base, n0)
        n1 = _cstep(X, s + U(1), feature, threshold, base, n1)
        n2 = _cstep(X, s + U(2), feature, threshold, base, n2)
        n3 = _cstep(X, s + U(3), feature, threshold, base, n3)
        n4 = _cstep(X, s + U(4), feature, threshold, base, n4)
        n5 = _cstep(X, s + U(5), feature, threshold, base, n5)
        n6 = _cstep(X, s + U(6), feature, threshold, base, n6)
        n7 = _cstep(X, s + U(7), feature, threshold, base, n7)
        n8 = _cstep(X, s + U(8), feature, threshold, base, n8)
        n9 = _cstep(X, s + U(9), feature, threshold, base, n9)
        n10 = _cstep(X, s + U(10), feature, threshold, base, n10)
        n11 = _cstep(X, s + U(11), feature, threshold, base, n11)
        n12 = _cstep(X, s + U(12), feature, threshold, base, n12)
        n13 = _cstep(X, s + U(13), feature, threshold, base, n13)
        n14 = _cstep(X, s + U(14), feature, threshold, base, n14)
        n15 = _cstep(X, s + U(15), feature, threshold, base, n15)
    return (n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, n11, n12, n13, n14, n15)


@njit(inline="always")
def _cwalk1(X, r, feature, threshold, base, depth):
    p = U(0)
    for _ in range(depth):
        p = _cstep(X, r, feature, threshold, base, p)
    return p


@njit(cache=True)
def _raw_score_complete(X, feature, threshold, node_offset, depth, leaf_offset, leaf_value, init, out):
    """``out`` (n,) = raw scores of rows ``X`` (n, n_features) of finite values, none with
    ``0 < |x| <= 1e-35``, constant leaves, trees in the complete layout
    (:func:`_fill_complete`; ``leaf_value`` per bottom position)."""
    # the 16 additions are written out: 1.03-1.11x over a loop indexing the walk's tuple
    # (A/B on dvp's default models, session 23), here and in _raw_score_complete_linear
    n = U(X.shape[0])
    full = n - n % U(CBLOCK)
    for c in range(U(0), full, U(CHUNK)):
        end = min(c + U(CHUNK), full)
        for r in range(c, end):
            out[r] = init
        for t in range(node_offset.shape[0]):
            base, d, first = U(node_offset[t]), U(depth[t]), U(leaf_offset[t])
            bottom = (U(1) << d) - U(1)
            for s in range(c, end, U(CBLOCK)):
                (p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14,
                 p15) = _cwalk16(X, s, feature, threshold, base, d)
                out[s + U(0)] += leaf_value[first + (p0 - bottom)]
                out[s + U(1)] += leaf_value[first + (p1 - bottom)]
                out[s + U(2)] += leaf_value[first + (p2 - bottom)]
                out[s + U(3)] += leaf_value[first + (p3 - bottom)]
                out[s + U(4)] += leaf_value[first + (p4 - bottom)]
                out[s + U(5)] += leaf_value[first + (p5 - bottom)]
                out[s + U(6)] += leaf_value[first + (p6 - bottom)]
                out[s + U(7)] += leaf_value[first + (p7 - bottom)]
                out[s + U(8)] += leaf_value[first + (p8 - bottom)]
                out[s + U(9)] += leaf_value[first + (p9 - bottom)]
                out[s + U(10)] += leaf_value[first + (p10 - bottom)]
                out[s + U(11)] += leaf_value[first + (p11 - bottom)]
                out[s + U(12)] += leaf_value[first + (p12 - bottom)]
                out[s + U(13)] += leaf_value[first + (p13 - bottom)]
                out[s + U(14)] += leaf_value[first + (p14 - bottom)]
                out[s + U(15)] += leaf_value[first + (p15 - bottom)]
    for r in range(full, n):
        a = init
        for t in range(node_offset.shape[0]):
            d = U(depth[t])
            p = _cwalk1(X, r, feature, threshold, U(node_offset[t]), d)
            a += leaf_value[U(leaf_offset[t]) + (p - ((U(1) << d) - U(1)))]
        out[r] = a


@njit(cache=True)
def _raw_score_complete_linear(X, feature, threshold, node_offset, depth, leaf_offset, leaf_index, leaf_const,
                               pad_feature, pad_value, width, leaf_low, leaf_high, init, out):
    """As :func:`_raw_score_complete` for linear leaves (as :func:`_raw_score_linear`):
    ``leaf_index`` per bottom position is the forest's leaf number."""
    n = U(X.shape[0])
    w = U(width)
    full = n - n % U(CBLOCK)
    for c in range(U(0), full, U(CHUNK)):
        end = min(c + U(CHUNK), full)
        for r in range(c, end):
            out[r] = init
        for t in range(node_offset.shape[0]):
            base, d, first = U(node_offset[t]), U(depth[t]), U(leaf_offset[t])
            bottom = (U(1) << d) - U(1)
            for s in range(c, end, U(CBLOCK)):
                (p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14,
                 p15) = _cwalk16(X, s, feature, threshold, base, d)
                out[s + U(0)] += _padded_leaf(X, s + U(0), U(leaf_index[first + (p0 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(1)] += _padded_leaf(X, s + U(1), U(leaf_index[first + (p1 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(2)] += _padded_leaf(X, s + U(2), U(leaf_index[first + (p2 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(3)] += _padded_leaf(X, s + U(3), U(leaf_index[first + (p3 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(4)] += _padded_leaf(X, s + U(4), U(leaf_index[first + (p4 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(5)] += _padded_leaf(X, s + U(5), U(leaf_index[first + (p5 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(6)] += _padded_leaf(X, s + U(6), U(leaf_index[first + (p6 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(7)] += _padded_leaf(X, s + U(7), U(leaf_index[first + (p7 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(8)] += _padded_leaf(X, s + U(8), U(leaf_index[first + (p8 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(9)] += _padded_leaf(X, s + U(9), U(leaf_index[first + (p9 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(10)] += _padded_leaf(X, s + U(10), U(leaf_index[first + (p10 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(11)] += _padded_leaf(X, s + U(11), U(leaf_index[first + (p11 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(12)] += _padded_leaf(X, s + U(12), U(leaf_index[first + (p12 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(13)] += _padded_leaf(X, s + U(13), U(leaf_index[first + (p13 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(14)] += _padded_leaf(X, s + U(14), U(leaf_index[first + (p14 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
                out[s + U(15)] += _padded_leaf(X, s + U(15), U(leaf_index[first + (p15 - bottom)]), leaf_const,
                                                pad_feature, pad_value, w, leaf_low, leaf_high)
    for r in range(full, n):
        a = init
        for t in range(node_offset.shape[0]):
            d = U(depth[t])
            p = _cwalk1(X, r, feature, threshold, U(node_offset[t]), d)
            leaf = U(leaf_index[U(leaf_offset[t]) + (p - ((U(1) << d) - U(1)))])
            a += _padded_leaf(X, r, leaf, leaf_const, pad_feature, pad_value, w, leaf_low, leaf_high)
        out[r] = a


@njit(inline="always")
def _leaf_missing(X, r, base, n_int, feature, threshold, child, missing, default_left):
    """Tree-local leaf node of row ``r`` in the tree at ``base``, LightGBM's missing-value rules."""
    j = 0
    while j < n_int:
        g = base + j
        x = X[r, feature[g]]
        if x != x:
            if missing[g] == MISSING_NAN:
                j = child[2 * g + (1 - default_left[g])]
                continue
            x = 0.0
        elif abs(x) <= ZERO_THRESHOLD:
            x = 0.0
        if missing[g] == MISSING_ZERO and x == 0.0:
            j = child[2 * g + (1 - default_left[g])]
        else:
            j = child[2 * g + (x > threshold[g])]
    return j


@njit(inline="always")
def _leaf_output_missing(X, r, leaf, leaf_value, leaf_const, coef_ptr, coef_feature, coef_value, leaf_low,
                         leaf_high):
    """Output of ``leaf`` for row ``r``: a NaN among the linear features gives ``leaf_value``
    (unbounded, as LightGBM), else the bounded linear value."""
    v = leaf_const[leaf]
    for p in range(coef_ptr[leaf], coef_ptr[leaf + 1]):
        x = X[r, coef_feature[p]]
        if x != x:
            return leaf_value[leaf]
        v += coef_value[p] * (0.0 if abs(x) <= ZERO_THRESHOLD else x)
    return _bounded(v, leaf_low[leaf], leaf_high[leaf])


@njit(cache=True)
def _raw_score_missing(X, feature, threshold, child, missing, default_left, node_offset, n_internal, leaf_value,
                       leaf_offset, leaf_const, coef_ptr, coef_feature, coef_value, leaf_low, leaf_high, init, out):
    """``out`` (n,) = raw scores of any rows ``X`` (n, n_features), one row at a time, with
    LightGBM's handling of NaN, zero and ``|x| <= 1e-35`` in splits (``missing``,
    ``default_left`` per node) and linear leaves (constant leaves: ``leaf_const ==
    leaf_value`` and no coefficients)."""
    n = X.shape[0]
    n_trees = node_offset.shape[0]
    for r in range(n):
        a = init
        for t in range(n_trees):
            j = _leaf_missing(X, r, node_offset[t], n_internal[t], feature, threshold, child, missing, default_left)
            a += _leaf_output_missing(X, r, leaf_offset[t] + j - n_internal[t], leaf_value, leaf_const, coef_ptr,
                                      coef_feature, coef_value, leaf_low, leaf_high)
        out[r] = a


@njit(inline="always")
def _sift_down(heap, i, m):
    """Move ``heap[i]`` down the max-heap ``heap[:m]`` until no child is larger (after the
    root was replaced, or to heapify)."""
    x = heap[i]
    while True:
        c = 2 * i + 1
        if c >= m:
            break
        if c + 1 < m and heap[c + 1] > heap[c]:
            c += 1
        if heap[c] <= x:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = x


@njit(cache=True)
def _rank_from_both_ends(values, rank):
    """``(low, high)``: the ``rank``-th smallest and ``rank``-th largest (0: the minimum and
    maximum) of ``values`` (k,), ``0 <= rank < k``: the values ``np.sort(values)[rank]``
    and ``np.sort(values)[k - 1 - rank]``, in one pass keeping the ``rank + 1`` smallest
    and largest in two max-heaps (the largest negated). A value enters a heap only when it
    beats that heap's root, so a pass costs about two comparisons per value where two
    ``np.partition`` calls copy and reorder the whole leaf twice."""
    k = values.shape[0]
    m = rank + 1
    small = np.empty(m)
    large = np.empty(m)
    for j in range(m):
        small[j] = values[j]
        large[j] = -values[j]
    for j in range(m // 2 - 1, -1, -1):   # heapify: sift every parent down, last first
        _sift_down(small, j, m)
        _sift_down(large, j, m)
    for j in range(m, k):
        v = values[j]
        if v < small[0]:
            small[0] = v
            _sift_down(small, 0, m)
        if -v < large[0]:
            large[0] = -v
            _sift_down(large, 0, m)
    return small[0], -large[0]


@njit(cache=True)
def _leaf_bounds(X, plain, feature, threshold, child, missing, default_left, node_offset, depth, n_internal,
                 leaf_value, leaf_offset, leaf_const, coef_ptr, coef_feature, coef_value, pad_feature, pad_value,
                 width, no_low, no_high, quantile, low, high):
    """Per leaf of every tree: the ``floor(quantile (k - 1))``-th smallest and largest of
    the (unbounded) outputs it gives the ``k`` rows of ``X`` that reach it, into ``low``
    and ``high`` (n_leaves,; leaves no row reaches are left as they are). Rows with
    ``plain[r]`` (:func:`_plain_rows`) take the branch-free walk, 8 in lockstep, and the
    padded linear leaf (``pad_feature``, ``pad_value``, ``width``) as the prediction
    kernels; the others LightGBM's missing-value rules. Outputs are measured with the
    bounds ``no_low``, ``no_high`` (n_leaves,): -inf and +inf."""
    n = X.shape[0]
    n_trees = node_offset.shape[0]
    w = U(width)
    max_leaves = 1
    for t in range(n_trees):
        max_leaves = max(max_leaves, n_internal[t] + 1)
    leaf = np.empty(n, np.int64)
    value = np.empty(n)
    grouped = np.empty(n)
    count = np.empty(max_leaves + 1, np.int64)
    fill = np.empty(max_leaves, np.int64)
    for t in range(n_trees):
        n_int = n_internal[t]
        first = leaf_offset[t]
        n_leaf = n_int + 1
        base, d = U(node_offset[t]), U(depth[t])
        r = 0
        while r < n:
            if r + BLOCK <= n and plain[r:r + BLOCK].all():
                nodes = _walk8(X, U(r), feature, threshold, child, base, d)
                for k in range(BLOCK):
                    i = np.int64(nodes[k]) - n_int
                    leaf[r + k] = i
                    v = _padded_leaf(X, U(r + k), U(first + i), leaf_const, pad_feature, pad_value, w, no_low, no_high)
                    if v == 0.0:   # the padding may give a zero the other sign: take the exact sum
                        v = _leaf_output_missing(X, r + k, first + i, leaf_value, leaf_const, coef_ptr, coef_feature,
                                                 coef_value, no_low, no_high)
                    value[r + k] = v
                r += BLOCK
            else:
                if plain[r]:
                    i = np.int64(_walk1(X, U(r), feature, threshold, child, base, d)) - n_int
                else:
                    i = _leaf_missing(X, r, node_offset[t], n_int, feature, threshold, child, missing,
                                      default_left) - n_int
                leaf[r] = i
                value[r] = _leaf_output_missing(X, r, first + i, leaf_value, leaf_const, coef_ptr, coef_feature,
                                                coef_value, no_low, no_high)
                r += 1
        # counting sort by leaf, then each leaf's outputs sorted
        count[:n_leaf + 1] = 0
        for r in range(n):
            count[leaf[r] + 1] += 1
        for i in range(n_leaf):
            count[i + 1] += count[i]
        fill[:n_leaf] = count[:n_leaf]
        for r in range(n):
            grouped[fill[leaf[r]]] = value[r]
            fill[leaf[r]] += 1
        for i in range(n_leaf):
            a, b = count[i], count[i + 1]
            k = b - a
            if k == 0:
                continue
            rank = np.int64(np.floor(quantile * (k - 1)))
            if rank == 0:
                lo = hi = grouped[a]
                for j in range(a + 1, b):
                    lo = min(lo, grouped[j])
                    hi = max(hi, grouped[j])
            else:
                lo, hi = _rank_from_both_ends(grouped[a:b], rank)
            low[first + i] = lo
            high[first + i] = hi


@njit(cache=True)
def _plain_rows(X, out):
    """``out[r]``: every value of row ``r`` is finite and none is ``0 < |x| <= 1e-35``.
    The fast kernels would treat other values differently from LightGBM: NaN and tiny
    values by its missing-value rules, and ±inf in a linear leaf, whose zero padding would
    make ``0 * inf`` a NaN. (-0.0 is read as +0.0 by LightGBM; the sign of a zero, and the
    padding's zeros, can change only the sign of a zero leaf output, which a sum that
    starts at +0.0 never shows.)"""
    for r in range(X.shape[0]):
        bad = False
        for c in range(X.shape[1]):
            x = X[r, c]
            bad |= (x != x) | (abs(x) == np.inf) | ((abs(x) <= ZERO_THRESHOLD) & (x != 0.0))
        out[r] = not bad


def _round_down_float32(t: np.ndarray) -> np.ndarray:
    """The largest float32 ``<= t``, per element. For a float32 ``x`` (not NaN),
    ``x > t`` exactly when ``x > t32``: ``x > t >= t32``, and a float32 above ``t32``
    is above ``t`` (``t32`` is the largest float32 not above it); beyond float32's range
    ``t32`` is its largest finite value or -inf, with the same answers for finite ``x``."""
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


@njit(cache=True)
def _tree_depths(child, node_offset, n_internal, n_nodes):
    """Longest root-to-leaf path of every tree (arrays as in :class:`Forest`, children
    already known to be tree-local node numbers), or -1 where the internal nodes do not
    form a tree (a node reached twice: a shared child or a cycle)."""
    n_trees = node_offset.shape[0]
    out = np.zeros(n_trees, np.int64)
    for t in range(n_trees):
        base = node_offset[t]
        size = (node_offset[t + 1] if t + 1 < n_trees else n_nodes) - base
        if n_internal[t] == 0:
            continue
        level = np.full(size, -1, np.int64)
        stack = np.empty(size, np.int64)
        level[0] = 0
        stack[0] = 0
        top = 1
        while top > 0 and out[t] >= 0:
            top -= 1
            j = stack[top]
            for side in range(2):
                c = child[2 * (base + j) + side]
                if level[c] >= 0:
                    out[t] = -1
                    break
                level[c] = level[j] + 1
                out[t] = max(out[t], level[c])
                if c < n_internal[t]:
                    stack[top] = c
                    top += 1
    return out


class Forest:
    """Flat arrays of a forest and how raw scores become predictions.

    Tree ``t`` owns nodes ``node_offset[t] ...``: its ``n_internal[t]`` internal nodes
    first (root 0), then its leaves, each leaf a node whose two children are itself
    (feature 0, threshold +inf). ``child[2 j]``/``child[2 j + 1]`` are node ``j``'s
    left/right children (tree-local numbers); ``depth[t]`` is the longest root-to-leaf
    path; leaf ``i`` of tree ``t`` has value ``leaf_value[leaf_offset[t] + i]``.
    ``transform`` is ``"identity"`` or ``"sigmoid"`` (binary classification), applied to the
    sum of the trees or, with ``average`` (LightGBM's ``boosting = rf``), to their mean.

    Parameters
    ----------
    feature, threshold : array_like, shape (n_nodes,)
    child : array_like, shape (2 n_nodes,)
    node_offset, depth, n_internal, leaf_offset : array_like, shape (n_trees,)
        ``depth`` may be None: computed. A depth may exceed the tree's (extra steps stay
        on the leaf), not fall below it (ValueError).
    leaf_value : array_like, shape (n_leaves,)
    n_features : int
    transform : {"identity", "sigmoid"}
    init : float
        Added to every raw score.
    average : bool
        The raw score is the mean of the tree outputs, not their sum: LightGBM's random
        forest mode (``boosting = rf``, ``average_output`` in its model file), whose trees
        carry the initial score in their leaves. ``init`` is then added before the division.
    missing : array_like of int, shape (n_nodes,), optional
        Per node: ``MISSING_NONE`` (default), ``MISSING_ZERO`` or ``MISSING_NAN``.
    default_left : array_like of bool, shape (n_nodes,), optional
        Per node: where missing values go (default: left).
    leaf_const : array_like, shape (n_leaves,), optional
        Linear leaves: the constant term; ``leaf_value`` is then only the output when a
        feature of the leaf's linear model is NaN.
    leaf_features, leaf_coeff : sequence of sequences, length n_leaves, optional
        Linear leaves: the features and coefficients of every leaf, in summation order.
    coef_ptr, coef_feature, coef_value : array_like, optional
        Linear leaves, instead of ``leaf_features`` and ``leaf_coeff``: the same,
        compressed as the attributes below (what :func:`flatten_lightgbm` passes: no
        per-leaf arrays).

    Attributes
    ----------
    linear : bool
        Whether the leaves are linear.
    zero_splits : bool
        Whether a split has ``missing_type`` Zero (every row then takes the per-row kernel).
    leaf_const : ndarray, shape (n_leaves,)
        ``leaf_value`` for constant leaves.
    coef_ptr : ndarray of int64, shape (n_leaves + 1,)
    coef_feature : ndarray of int32, shape (n_coefficients,)
    coef_value : ndarray of float64, shape (n_coefficients,)
        Leaf ``i``'s coefficients are entries ``coef_ptr[i] ... coef_ptr[i + 1] - 1``.
    coef_width : int
        The most coefficients of any leaf (0 for constant leaves).
    coef_pad_feature : ndarray of uint32, shape (n_leaves coef_width,)
    coef_pad_value : ndarray of float64, shape (n_leaves coef_width,)
        The same, ``coef_width`` entries per leaf: its coefficients, then zeros (feature 0).
    feature, child : ndarray of uint32
        As given, once checked (the fast kernels index with unsigned integers).
    threshold32 : ndarray of float32, shape (n_nodes,)
        Each threshold rounded down to float32: for float32 rows the same splits as
        ``threshold`` (:func:`_round_down_float32`), compared without conversion.
    depth : ndarray of int64, shape (n_trees,)
        As given, or each tree's longest root-to-leaf path if ``depth`` is None.
    leaf_low, leaf_high : ndarray, shape (n_leaves,)
        Bounds of the linear leaves' outputs (:meth:`set_leaf_bounds`; -inf, +inf: none).
    """

    def __init__(self, feature, threshold, child, node_offset, depth, n_internal, leaf_value, leaf_offset,
                 n_features, transform="identity", init=0.0, *, average=False, missing=None, default_left=None,
                 leaf_const=None, leaf_features=None, leaf_coeff=None, coef_ptr=None, coef_feature=None,
                 coef_value=None):
        self.feature = np.ascontiguousarray(feature, np.int32)
        self.threshold = np.ascontiguousarray(threshold, np.float64)
        self.child = np.ascontiguousarray(child, np.int64)
        self.node_offset = np.ascontiguousarray(node_offset, np.int64)
        self.depth = None if depth is None else np.ascontiguousarray(depth, np.int64)
        self.n_internal = np.ascontiguousarray(n_internal, np.int64)
        self.leaf_value = np.ascontiguousarray(leaf_value, np.float64)
        self.leaf_offset = np.ascontiguousarray(leaf_offset, np.int64)
        self.n_features = int(n_features)
        self.transform = transform
        self.init = float(init)
        self.average = bool(average)
        n_nodes, n_leaves = len(self.feature), len(self.leaf_value)
        self.missing = np.ascontiguousarray(np.zeros(n_nodes) if missing is None else missing, np.int8)
        self.default_left = np.ascontiguousarray(np.ones(n_nodes) if default_left is None else default_left, np.int8)
        self.linear = leaf_const is not None
        if self.linear:
            self.leaf_const = np.ascontiguousarray(leaf_const, np.float64)
            if coef_ptr is not None:
                if coef_feature is None or coef_value is None or leaf_features is not None or leaf_coeff is not None:
                    raise ValueError("linear leaves: give coef_ptr, coef_feature and coef_value, or leaf_features "
                                     "and leaf_coeff")
                self.coef_ptr = np.ascontiguousarray(coef_ptr, np.int64)
                self.coef_feature = np.ascontiguousarray(coef_feature, np.int32)
                self.coef_value = np.ascontiguousarray(coef_value, np.float64)
                p = self.coef_ptr
                if len(p) != n_leaves + 1 or p[0] != 0 or np.any(np.diff(p) < 0) \
                        or not p[-1] == len(self.coef_feature) == len(self.coef_value):
                    raise ValueError("linear leaves: coef_ptr does not index coef_feature / coef_value")
            else:
                if leaf_features is None or leaf_coeff is None or not len(leaf_features) == len(leaf_coeff) == n_leaves:
                    raise ValueError("linear leaves need leaf_const, leaf_features and leaf_coeff for every leaf")
                counts = [len(f) for f in leaf_features]
                if counts != [len(c) for c in leaf_coeff]:
                    raise ValueError("leaf_features and leaf_coeff differ in length")
                self.coef_ptr = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
                self.coef_feature = np.ascontiguousarray(np.concatenate([np.zeros(0), *leaf_features]), np.int32)
                self.coef_value = np.ascontiguousarray(np.concatenate([np.zeros(0), *leaf_coeff]), np.float64)
        else:
            self.leaf_const = self.leaf_value
            self.coef_ptr = np.zeros(n_leaves + 1, np.int64)
            self.coef_feature = np.zeros(0, np.int32)
            self.coef_value = np.zeros(0, np.float64)
        self.leaf_low = np.full(n_leaves, -np.inf)
        self.leaf_high = np.full(n_leaves, np.inf)
        self._check(n_nodes, n_leaves)
        # checked: every index is in range, so unsigned copies are exact (the fast kernels' types)
        self.feature = self.feature.astype(np.uint32)
        self.child = self.child.astype(np.uint32)
        self.zero_splits = bool(np.any(self.missing == MISSING_ZERO))
        self.threshold32 = _round_down_float32(self.threshold)
        counts = np.diff(self.coef_ptr)
        self.coef_width = int(counts.max()) if len(counts) else 0
        slot = np.arange(len(self.coef_feature)) - np.repeat(self.coef_ptr[:-1], counts)
        where = np.repeat(np.arange(n_leaves), counts) * self.coef_width + slot
        self.coef_pad_feature = np.zeros(n_leaves * self.coef_width, np.uint32)
        self.coef_pad_value = np.zeros(n_leaves * self.coef_width, np.float64)
        self.coef_pad_feature[where] = self.coef_feature
        self.coef_pad_value[where] = self.coef_value
        self._complete = None   # complete_layout(), on first use

    def _check(self, n_nodes, n_leaves):
        """Indices the kernels follow without bounds checks must be in range."""
        if len(self.threshold) != n_nodes or len(self.child) != 2 * n_nodes or len(self.leaf_const) != n_leaves \
                or len(self.missing) != n_nodes or len(self.default_left) != n_nodes:
            raise ValueError("forest arrays differ in length")
        if self.depth is not None and len(self.depth) != len(self.node_offset) \
                or not len(self.node_offset) == len(self.n_internal) == len(self.leaf_offset):
            raise ValueError("per-tree arrays differ in length")
        for name, idx in (("feature", self.feature), ("leaf feature", self.coef_feature)):
            if len(idx) and (idx.min() < 0 or idx.max() >= self.n_features):
                raise ValueError(f"{name} index outside 0 ... {self.n_features - 1}")
        bad = ValueError("inconsistent tree layout (children, node or leaf counts, missing codes)")
        ends = np.append(self.node_offset[1:], n_nodes)
        leaves = np.append(self.leaf_offset[1:], n_leaves) - self.leaf_offset
        if self.n_trees and (self.node_offset[0] != 0 or self.leaf_offset[0] != 0) or np.any(leaves < 1) \
                or np.any(self.n_internal < 0) or np.any(self.n_internal + leaves != ends - self.node_offset) \
                or n_nodes >= 2 ** 32:
            raise bad
        tree_of_node = np.repeat(np.arange(self.n_trees), ends - self.node_offset)
        local = np.arange(n_nodes) - self.node_offset[tree_of_node]
        size = (ends - self.node_offset)[np.repeat(tree_of_node, 2)]
        is_leaf = np.repeat(local >= self.n_internal[tree_of_node], 2)
        # leaves must point to themselves: the branch-free walks take extra steps there
        if np.any((self.child < 0) | (self.child >= size)) \
                or np.any(self.child[is_leaf] != np.repeat(local, 2)[is_leaf]) \
                or np.any(self.missing < 0) or np.any(self.missing > MISSING_NAN):
            raise bad
        depth = _tree_depths(self.child, self.node_offset, self.n_internal, n_nodes)
        if np.any(depth < 0):
            raise ValueError("inconsistent tree layout (a node is reached twice)")
        if self.depth is None:
            self.depth = depth
        elif np.any(self.depth < depth):   # fewer steps would end walks on internal nodes
            raise ValueError("depth is below a tree's longest root-to-leaf path")

    @property
    def n_trees(self) -> int:
        return len(self.node_offset)

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_value)

    def set_leaf_bounds(self, low, high) -> None:
        """Bound every linear leaf's output to ``[low[i], high[i]]`` (-inf/+inf or NaN: no
        bound on that side). The ``leaf_value`` fallback of a leaf with a NaN feature is
        not bounded; a forest of constant leaves cannot be (ValueError): it does not
        extrapolate.

        Parameters
        ----------
        low, high : array_like, shape (n_leaves,)
            In the model's raw-score units (log10 E for an energy model).
        """
        if not self.linear:
            raise ValueError("leaf bounds are for linear leaves; this forest has constant leaves")
        low = np.array(low, np.float64)
        high = np.array(high, np.float64)
        if low.shape != (self.n_leaves,) or high.shape != (self.n_leaves,):
            raise ValueError(f"leaf bounds have shapes {low.shape} and {high.shape}, expected ({self.n_leaves},)")
        low[np.isnan(low)] = -np.inf
        high[np.isnan(high)] = np.inf
        if np.any(low > high):
            raise ValueError("a leaf's lower bound is above its upper bound")
        self.leaf_low, self.leaf_high = low, high

    def leaf_output_bounds(self, X: np.ndarray, quantile: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Per leaf, the range of the outputs it gives the rows ``X`` (the training rows).

        Parameters
        ----------
        X : ndarray, shape (n, n_features), float32 or float64
        quantile : float in [0, 0.5)
            For a leaf reached by ``k`` rows, ``low`` is its ``floor(quantile (k - 1))``-th
            smallest output (0: the minimum) and ``high`` the same rank from the top: a
            few outlying training rows then do not set the bounds.

        Returns
        -------
        low, high : ndarray, shape (n_leaves,)
            -inf, +inf for leaves no row reaches. Outputs are unbounded while computing
            them (the current bounds are ignored).
        """
        X = self._rows(X)
        if not 0.0 <= quantile < 0.5:
            raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
        low = np.full(self.n_leaves, -np.inf)
        high = np.full(self.n_leaves, np.inf)
        plain = np.empty(X.shape[0], np.bool_)
        _plain_rows(X, plain)
        if self.zero_splits:
            plain[:] = False
        no_low, no_high = np.full(self.n_leaves, -np.inf), np.full(self.n_leaves, np.inf)
        _leaf_bounds(X, plain, self.feature, self.threshold, self.child, self.missing, self.default_left,
                     self.node_offset, self.depth, self.n_internal, self.leaf_value, self.leaf_offset, self.leaf_const,
                     self.coef_ptr, self.coef_feature, self.coef_value, self.coef_pad_feature, self.coef_pad_value,
                     self.coef_width, no_low, no_high, float(quantile), low, high)
        return low, high

    def _rows(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, expected (n, {self.n_features})")
        if X.dtype not in (np.float32, np.float64):
            raise ValueError(f"X must be float32 or float64, got {X.dtype}")
        return np.ascontiguousarray(X)

    def complete_layout(self):
        """The trees as complete binary trees (:func:`_fill_complete`), built on first use:
        ``(feature, threshold, threshold32, node_offset, leaf_offset, leaf_index,
        leaf_value)``, per position, per tree and per bottom position (``leaf_index``:
        the forest's leaf number; ``leaf_value``: its value). None when a tree is deeper
        than :data:`COMPLETE_MAX_DEPTH` (or there are no trees)."""
        if self._complete is None:
            if not self.n_trees or self.depth.max() > COMPLETE_MAX_DEPTH:
                self._complete = False
            else:
                size = np.left_shift(1, self.depth).astype(np.int64)
                node_offset = np.concatenate([[0], np.cumsum(size - 1)[:-1]]).astype(np.int64)
                leaf_offset = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
                feature = np.empty(int((size - 1).sum()), np.uint32)
                threshold = np.empty(len(feature), np.float64)
                threshold32 = np.empty(len(feature), np.float32)
                leaf_node = np.empty(int(size.sum()), np.int64)
                _fill_complete(self.feature, self.threshold, self.threshold32, self.child, self.node_offset,
                               self.depth, node_offset, leaf_offset, feature, threshold, threshold32, leaf_node)
                leaf_index = np.repeat(self.leaf_offset - self.n_internal, size) + leaf_node
                self._complete = (feature, threshold, threshold32, node_offset, leaf_offset,
                                  leaf_index.astype(np.uint32), self.leaf_value[leaf_index])
        return self._complete or None

    def _raw_fast(self, X, out):
        # float32 rows compare with float32 thresholds: no conversion in the walk's chain
        complete = self.complete_layout()
        if complete is not None:
            feature, threshold, threshold32, node_offset, leaf_offset, leaf_index, leaf_value = complete
            threshold = threshold32 if X.dtype == np.float32 else threshold
            if self.linear:
                _raw_score_complete_linear(X, feature, threshold, node_offset, self.depth, leaf_offset, leaf_index,
                                           self.leaf_const, self.coef_pad_feature, self.coef_pad_value,
                                           self.coef_width, self.leaf_low, self.leaf_high, self.init, out)
            else:
                _raw_score_complete(X, feature, threshold, node_offset, self.depth, leaf_offset, leaf_value,
                                    self.init, out)
            return
        threshold = self.threshold32 if X.dtype == np.float32 else self.threshold
        if self.linear:
            _raw_score_linear(X, self.feature, threshold, self.child, self.node_offset, self.depth,
                              self.n_internal, self.leaf_offset, self.leaf_const, self.coef_pad_feature,
                              self.coef_pad_value, self.coef_width, self.leaf_low, self.leaf_high, self.init, out)
        else:
            _raw_score(X, self.feature, threshold, self.child, self.node_offset, self.depth, self.n_internal,
                       self.leaf_value, self.leaf_offset, self.init, out)

    def _raw_missing(self, X, out):
        _raw_score_missing(X, self.feature, self.threshold, self.child, self.missing, self.default_left,
                           self.node_offset, self.n_internal, self.leaf_value, self.leaf_offset, self.leaf_const,
                           self.coef_ptr, self.coef_feature, self.coef_value, self.leaf_low, self.leaf_high, self.init,
                           out)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions equal to LightGBM's (with leaf bounds, if set: :meth:`set_leaf_bounds`).

        Parameters
        ----------
        X : ndarray, shape (n, n_features), float32 or float64
            Any values; NaN and values near zero are handled as LightGBM does.

        Returns
        -------
        ndarray, shape (n,), float64
        """
        X = self._rows(X)
        out = np.empty(X.shape[0])
        plain = np.empty(X.shape[0], np.bool_)
        _plain_rows(X, plain)
        if self.zero_splits:
            self._raw_missing(X, out)
        elif plain.all():
            self._raw_fast(X, out)
        else:   # the rare rows with NaN or near-zero values one at a time, the others 8 at a time
            part = np.empty(int(plain.sum()))
            self._raw_fast(X[plain], part)
            out[plain] = part
            part = np.empty(len(out) - len(part))
            self._raw_missing(X[~plain], part)
            out[~plain] = part
        if self.average and self.n_trees:   # LightGBM's order: the sum, then divided by the trees
            out /= self.n_trees
        if self.transform == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-out))
        return out


#: objectives whose prediction is the raw score
_IDENTITY_OBJECTIVES = ("regression", "regression_l2", "l2", "huber", "fair", "regression_l1", "quantile")
_MISSING_CODES = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}


def _model_text(model) -> tuple[dict, set, list]:
    """LightGBM's text model (a ``Booster``'s best iteration, or the text itself) as
    (header keys, header flags, per-tree keys)."""
    header, flags, trees = {}, set(), []
    cur = header
    for line in (model if isinstance(model, str) else model.model_to_string()).splitlines():
        if line.startswith("Tree="):
            cur = {}
            trees.append(cur)
        elif line.startswith("end of trees"):
            break
        elif "=" in line:
            k, v = line.split("=", 1)
            cur[k] = v
        elif line and cur is header:
            flags.add(line.strip())
    return header, flags, trees


def _numbers(tree: dict, key: str, dtype, n: int) -> np.ndarray:
    v = np.array(tree.get(key, "").split(), dtype)
    if len(v) != n:
        raise ValueError(f"tree array {key} has {len(v)} values, expected {n}")
    return v


def flatten_lightgbm(model) -> Forest:
    """A :class:`Forest` equal to a LightGBM model (constant or linear leaves), from
    LightGBM's own text model: a ``Booster``'s ``model_to_string`` (best iteration), or
    that text (a ``.lgb.txt`` model file's contents) given as ``str``, which needs no
    LightGBM. Thresholds and leaf values are written with 17 significant digits, so they
    read back exactly; 10x faster than going through ``dump_model``'s JSON.

    Raises
    ------
    ValueError
        For models this kernel cannot evaluate: categorical splits, objectives other
        than regression (without ``reg_sqrt``) and binary with ``sigmoid`` 1, more than
        one tree per iteration.
    """
    header, flags, trees = _model_text(model)
    objective = header.get("objective", "regression").split()
    if objective[0] == "binary":
        if any(p.startswith("sigmoid:") and float(p.split(":")[1]) != 1.0 for p in objective[1:]):
            raise ValueError("binary objective with sigmoid != 1 is not supported")
        transform = "sigmoid"
    elif objective[0] in _IDENTITY_OBJECTIVES:
        if "sqrt" in objective[1:]:
            raise ValueError("regression with reg_sqrt (predictions squared) is not supported")
        transform = "identity"
    else:
        raise ValueError(f"objective {header.get('objective')!r} is not supported")
    if int(header.get("num_tree_per_iteration", 1)) != 1:
        raise ValueError("models with more than one tree per iteration are not supported")
    feature, threshold, child, missing, default_left = [], [], [], [], []
    leaf_value, leaf_const, coef_count, coef_feature, coef_value = [], [], [], [], []
    node_offset, n_internal, leaf_offset = [], [], []
    linear = False
    n_nodes = n_leaves_all = 0
    for tree in trees:
        n_leaves = int(tree["num_leaves"])
        n_int = n_leaves - 1
        if int(tree.get("num_cat", 0)) > 0:
            raise ValueError("split with decision_type '==' (categorical) is not supported")
        node_offset.append(n_nodes)
        n_internal.append(n_int)
        leaf_offset.append(n_leaves_all)
        # every node starts as a self-loop (what leaves stay): feature 0, threshold +inf
        f = np.zeros(n_int + n_leaves, np.int32)
        thr = np.full(n_int + n_leaves, np.inf)
        miss = np.zeros(n_int + n_leaves, np.int8)
        dleft = np.ones(n_int + n_leaves, np.int8)
        ch = np.repeat(np.arange(n_int + n_leaves, dtype=np.int64), 2)
        if n_int:
            dt = _numbers(tree, "decision_type", np.int64, n_int)
            if np.any(dt & 1):
                raise ValueError("split with decision_type '==' (categorical) is not supported")
            f[:n_int] = _numbers(tree, "split_feature", np.int64, n_int)
            thr[:n_int] = _numbers(tree, "threshold", np.float64, n_int)
            miss[:n_int] = (dt >> 2) & 3
            dleft[:n_int] = (dt >> 1) & 1
            lr = np.stack([_numbers(tree, "left_child", np.int64, n_int), _numbers(tree, "right_child", np.int64, n_int)],
                          axis=1)
            # LightGBM: child >= 0 an internal node, ~child a leaf (numbered after the internal nodes here)
            lr = np.where(lr >= 0, lr, n_int + ~lr)
            ch[:2 * n_int] = lr.ravel()
        values = _numbers(tree, "leaf_value", np.float64, n_leaves)
        leaf_value.append(values)
        if tree.get("is_linear", "0").strip() == "1":
            linear = True
            leaf_const.append(_numbers(tree, "leaf_const", np.float64, n_leaves))
            counts = _numbers(tree, "num_features", np.int64, n_leaves)
            coef_count.append(counts)
            coef_feature.append(_numbers(tree, "leaf_features", np.int64, int(counts.sum())))
            coef_value.append(_numbers(tree, "leaf_coeff", np.float64, int(counts.sum())))
        else:
            leaf_const.append(values)
            coef_count.append(np.zeros(n_leaves, np.int64))
        feature.append(f)
        threshold.append(thr)
        missing.append(miss)
        default_left.append(dleft)
        child.append(ch)
        n_nodes += n_int + n_leaves
        n_leaves_all += n_leaves
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    ptr = np.concatenate([[0], np.cumsum(cat(coef_count, np.int64))])
    lin = dict(leaf_const=cat(leaf_const, np.float64), coef_ptr=ptr, coef_feature=cat(coef_feature, np.int32),
               coef_value=cat(coef_value, np.float64)) if linear else {}
    # depth None: the Forest finds every tree's depth as it checks the tree is one
    return Forest(cat(feature, np.int32), cat(threshold, np.float64), cat(child, np.int64), node_offset, None,
                  n_internal, cat(leaf_value, np.float64), leaf_offset, int(header["max_feature_idx"]) + 1, transform,
                  average="average_output" in flags, missing=cat(missing, np.int8),
                  default_left=cat(default_left, np.int8), **lin)
