"""Island (connected-component) labelling of cleaning masks over the pixel neighbour graph.

Reproduces ctapipe 0.28's ``ctapipe.image.morphology.number_of_islands`` and
``largest_island`` for a batch of events of one camera type.

Neighbours are CSR arrays: the neighbours of pixel ``p`` are
``neighbor_indices[neighbor_indptr[p]:neighbor_indptr[p + 1]]`` (ctapipe's
``geom.neighbor_matrix_sparse`` rows; order within a row does not matter here).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["label_islands", "largest_island_mask", "check_csr", "check_mask", "csr_u32"]


def check_csr(neighbor_indptr, neighbor_indices, n_pixels: int):
    """Validate CSR neighbour arrays for a camera of ``n_pixels`` pixels.

    Returns
    -------
    indptr : ndarray, shape (n_pixels + 1,), int32, C-contiguous
    indices : ndarray, shape (n_neighbors_total,), int32, C-contiguous
    """
    indptr = np.asarray(neighbor_indptr)
    indices = np.asarray(neighbor_indices)
    if indptr.ndim != 1 or indptr.dtype.kind not in "iu" or indptr.shape[0] != n_pixels + 1:
        raise ValueError(f"neighbor_indptr must be an integer array of shape ({n_pixels + 1},), "
                         f"got {indptr.dtype} {indptr.shape}")
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ValueError(f"neighbor_indices must be a 1-d integer array, got {indices.dtype} {indices.shape}")
    if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError("neighbor_indptr is not a valid CSR index pointer for neighbor_indices")
    if indices.shape[0] and (indices.min() < 0 or indices.max() >= n_pixels):
        raise ValueError(f"neighbor_indices must lie in [0, {n_pixels})")
    return np.ascontiguousarray(indptr, np.int32), np.ascontiguousarray(indices, np.int32)


def check_mask(mask, name="mask"):
    """Validate a ``(n_events, n_pixels)`` boolean mask; returns it C-contiguous."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"{name} must be a bool array of shape (n_events, n_pixels), got {mask.dtype} {mask.shape}")
    return np.ascontiguousarray(mask)


@njit(cache=True)
def _word_scratch(n_pix):
    """A zeroed uint8 row padded to whole 8-byte words, and its uint64 view."""
    buf8 = np.zeros((n_pix + 7) // 8 * 8, np.uint8)
    return buf8, buf8.view(np.uint64)


@njit(cache=True)
def _gather_words(buf8, buf64, cand):
    """Indices of the nonzero bytes of ``buf8`` (increasing) into ``cand``; returns their
    number. Whole 8-pixel words without any are skipped with one test: masks are sparse
    (a shower covers a few % of the camera). Padding bytes must be 0."""
    n = 0
    for w in range(buf64.shape[0]):
        if buf64[w] != 0:
            for p in range(8 * w, 8 * w + 8):
                cand[n] = p  # written always, kept only where the byte is set (branch-free)
                n += buf8[p] != 0
    return n


@njit(cache=True)
def _gather(m, buf8, buf64, cand):
    """Indices of the True entries of the bool row ``m`` (increasing) into ``cand``;
    returns their number. ``buf8``/``buf64`` from `_word_scratch` (a row of a 2-d mask
    is not word aligned, so it is copied first, which costs less than a byte-wise scan)."""
    for p in range(m.shape[0]):
        buf8[p] = m[p]
    return _gather_words(buf8, buf64, cand)


@njit(cache=True)
def _label_cand(mask, cand, n_cand, indptr, indices, labels, queue):
    """Label the islands of one event's ``mask``; returns their number.

    ``cand[:n_cand]`` lists, increasing, a superset of the mask pixels. ``labels``
    (n_pixels, int32) must be 0 at every mask pixel on entry; mask pixels get their island
    number 1..k, other entries are not touched. ``queue`` is scratch of length n_pixels + 1.
    Islands are numbered in the order of their lowest pixel index, as ctapipe's search
    starting from each not yet visited mask pixel in index order does, and each island is
    everything reachable from that pixel along CSR rows. Breadth first with branch-free
    pushes (a pixel is labelled when queued, so it is queued once).
    """
    k = 0
    for i in range(n_cand):
        p = cand[i]
        if not mask[p] or labels[p] != 0:
            continue
        k += 1
        labels[p] = k
        queue[0] = p
        head = 0
        tail = 1
        while head < tail:
            q = queue[head]
            head += 1
            for j in range(indptr[q], indptr[q + 1]):
                nb = indices[j]
                c = mask[nb] & (labels[nb] == 0)
                queue[tail] = nb
                tail += c
                labels[nb] += c * k
    return k


@njit(cache=True)
def _largest_label(labels, cand, n_cand, n_islands, counts):
    """Label of the island with most pixels (lowest label on ties), 0 if there is none.

    Only ``labels[cand[:n_cand]]`` are looked at; ``counts`` is scratch of length
    >= n_islands + 1.
    """
    if n_islands <= 0:
        return 0
    for i in range(n_islands + 1):
        counts[i] = 0
    for i in range(n_cand):
        counts[labels[cand[i]]] += 1
    best = 1
    for i in range(2, n_islands + 1):
        if counts[i] > counts[best]:
            best = i
    return best


@njit(cache=True)
def _label_islands(mask, indptr, indices, labels, n_islands):
    """Batch body of `label_islands`; ``labels`` must be all 0 on entry.

    CSR arrays are the validated int32 arrays viewed as uint32 (unsigned indices spare
    numba's negative-index handling).
    """
    n_ev, n_pix = mask.shape
    cand = np.empty(n_pix, np.uint32)
    queue = np.empty(n_pix + 1, indices.dtype)
    buf8, buf64 = _word_scratch(n_pix)
    for e in range(n_ev):
        m = mask[e]
        n_c = _gather(m, buf8, buf64, cand)
        n_islands[e] = _label_cand(m, cand, n_c, indptr, indices, labels[e], queue)


@njit(cache=True)
def _largest_island_mask(labels, n_islands, out):
    n_ev, n_pix = labels.shape
    counts = np.empty(n_pix + 1, np.int64)
    for e in range(n_ev):
        k = n_islands[e]
        row = labels[e]
        o = out[e]
        if k <= 0:
            for p in range(n_pix):
                o[p] = False
            continue
        for i in range(k + 1):
            counts[i] = 0
        for p in range(n_pix):
            lab = row[p]
            if lab != 0:  # rare and predictable; counting label 0 would chain on counts[0]
                counts[lab] += 1
        best = 1
        for i in range(2, k + 1):
            if counts[i] > counts[best]:
                best = i
        for p in range(n_pix):
            o[p] = row[p] == best


def csr_u32(indptr, indices):
    """Validated int32 CSR arrays viewed as uint32, as the private kernels take them."""
    return indptr.view(np.uint32), indices.view(np.uint32)


def label_islands(mask, neighbor_indptr, neighbor_indices):
    """Connected components ("islands") of cleaning masks.

    Parameters
    ----------
    mask : ndarray, shape (n_events, n_pixels), bool
        Pixels surviving cleaning.
    neighbor_indptr : ndarray, shape (n_pixels + 1,), int32
    neighbor_indices : ndarray, shape (n_neighbors_total,), int32
        Pixel neighbours as CSR.

    Returns
    -------
    labels : ndarray, shape (n_events, n_pixels), int32
        0 for pixels not in the mask, otherwise the island number 1..n_islands; islands
        are numbered by their lowest pixel index, as ctapipe's ``number_of_islands``.
    n_islands : ndarray, shape (n_events,), int32
    """
    mask = check_mask(mask)
    indptr, indices = check_csr(neighbor_indptr, neighbor_indices, mask.shape[1])
    labels = np.zeros(mask.shape, np.int32)
    n_islands = np.empty(mask.shape[0], np.int32)
    _label_islands(mask, *csr_u32(indptr, indices), labels, n_islands)
    return labels, n_islands


def largest_island_mask(labels, n_islands):
    """Mask of the island with the most pixels, as ctapipe's ``largest_island``.

    Ties go to the lowest island label (``np.argmax`` of the pixel counts).

    Parameters
    ----------
    labels : ndarray, shape (n_events, n_pixels), int
        Island labels from `label_islands` (0 = no island).
    n_islands : ndarray, shape (n_events,), int
        Number of islands per event.

    Returns
    -------
    mask : ndarray, shape (n_events, n_pixels), bool
        All False for events without islands.
    """
    labels = np.asarray(labels)
    n_islands = np.asarray(n_islands)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array (n_events, n_pixels), got {labels.dtype} {labels.shape}")
    if n_islands.shape != (labels.shape[0],) or n_islands.dtype.kind not in "iu":
        raise ValueError(f"n_islands must be an integer array of shape ({labels.shape[0]},), "
                         f"got {n_islands.dtype} {n_islands.shape}")
    labels = np.ascontiguousarray(labels, np.int32)
    n_islands = np.ascontiguousarray(n_islands, np.int32)
    if labels.size and (labels.min() < 0 or np.any(labels.max(axis=1) > n_islands)):
        raise ValueError("labels must lie in [0, n_islands] of their event")
    out = np.empty(labels.shape, np.bool_)
    _largest_island_mask(labels, n_islands, out)
    return out
