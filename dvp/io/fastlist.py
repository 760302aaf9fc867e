"""Fast reader for ``fixed_size_list<numeric>`` Parquet columns (R1 waveforms).

pyarrow decodes a nested column value by value: for the waveform column
(``fixed_size_list<float32>[n_pixels * n_samples]``, ~300 KB a row) it spends
~4-5 ns per value on repetition/definition levels and list offsets, ~10x the cost
of copying the bytes. When such a column is stored UNCOMPRESSED with PLAIN values
and no dictionary, its column chunk is just a sequence of pages whose value
sections are the raw little-endian numbers, so we can read them ourselves:

1. locate the column chunk from the footer metadata;
2. parse each page header (Thrift compact protocol, decoded here; a header whose
   bytes were seen before is not decoded again);
3. decode the level streams only run by run, to *verify* that the column is a
   plain table of full lists (no null list, no null element, exactly
   ``list_size`` values a row): compiled with numba (:func:`_levels_nb`), with a
   pure-Python reference (:func:`_check_levels_py`) the tests compare it with;
4. ``preadv`` the value sections straight into the output array (one copy), the
   next page's header and levels with them.

Anything that is not this simple layout (compression, dictionary, other
encodings, nulls, unknown page types, inconsistent sizes, a damaged header)
makes :func:`read_fixed_size_list` return ``None`` and :func:`read_row_group`
fall back to pyarrow for that column: the fast path never guesses.
"""
from __future__ import annotations

import os
import struct
import sys
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit

__all__ = ["read_row_group", "read_row_groups", "read_fixed_size_list", "stream_fixed_size_list", "BufferPool"]


class _Unsupported(Exception):
    """Layout not handled (or damaged): the caller falls back to pyarrow."""


# --------------------------------------------------------------------------------------
# Thrift compact protocol (only decoding; enough for Parquet page headers)
# --------------------------------------------------------------------------------------

# compact-protocol type ids
_T_TRUE, _T_FALSE, _T_BYTE, _T_I16, _T_I32, _T_I64, _T_DOUBLE, _T_BINARY = 1, 2, 3, 4, 5, 6, 7, 8
_T_LIST, _T_SET, _T_MAP, _T_STRUCT, _T_UUID = 9, 10, 11, 12, 13
_MAX_DEPTH = 32  # Parquet headers nest 3-4 deep; a damaged header must not recurse forever


class _Truncated(_Unsupported):
    """The Thrift reader ran past the end of the buffer (the header may be larger than the probe)."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Unsigned LEB128 varint at ``buf[pos]`` -> (value, new pos)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated("varint runs past the buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:  # an i64 takes at most 10 bytes
            raise _Unsupported("varint too long")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _read_value(buf: bytes, pos: int, end: int, ttype: int, depth: int, in_container: bool = False):
    """Decode one value of compact type ``ttype`` -> (value, new pos)."""
    if ttype in (_T_I32, _T_I64, _T_I16):
        v, pos = _varint(buf, pos, end)
        return _zigzag(v), pos
    if ttype == _T_STRUCT:
        return _read_struct(buf, pos, end, depth + 1)
    if ttype == _T_BINARY:
        n, pos = _varint(buf, pos, end)
        if pos + n > end:
            raise _Truncated("binary runs past the buffer")
        return bytes(buf[pos:pos + n]), pos + n
    if ttype in (_T_TRUE, _T_FALSE):
        if not in_container:  # in a struct field the value is the type id itself
            return ttype == _T_TRUE, pos
        if pos >= end:
            raise _Truncated("bool runs past the buffer")
        return buf[pos] == 1, pos + 1  # inside lists/maps a bool is one byte
    if ttype == _T_BYTE:
        if pos >= end:
            raise _Truncated("byte runs past the buffer")
        b = buf[pos]
        return b - 256 if b > 127 else b, pos + 1
    if ttype == _T_DOUBLE:
        if pos + 8 > end:
            raise _Truncated("double runs past the buffer")
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if ttype == _T_UUID:
        if pos + 16 > end:
            raise _Truncated("uuid runs past the buffer")
        return bytes(buf[pos:pos + 16]), pos + 16
    if ttype in (_T_LIST, _T_SET):
        if depth >= _MAX_DEPTH:
            raise _Unsupported("Thrift nesting too deep")
        if pos >= end:
            raise _Truncated("list header runs past the buffer")
        h = buf[pos]
        pos += 1
        n, etype = h >> 4, h & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos, end)
        if n > end - pos:  # every element takes at least one byte: a huge count is damage
            raise _Truncated("list longer than the buffer")
        out = []
        for _ in range(n):
            v, pos = _read_value(buf, pos, end, etype, depth + 1, True)
            out.append(v)
        return out, pos
    if ttype == _T_MAP:
        if depth >= _MAX_DEPTH:
            raise _Unsupported("Thrift nesting too deep")
        n, pos = _varint(buf, pos, end)
        out = {}
        if n:
            if n > end - pos:
                raise _Truncated("map longer than the buffer")
            if pos >= end:
                raise _Truncated("map header runs past the buffer")
            kt, vt = buf[pos] >> 4, buf[pos] & 0x0F
            pos += 1
            for _ in range(n):
                k, pos = _read_value(buf, pos, end, kt, depth + 1, True)
                v, pos = _read_value(buf, pos, end, vt, depth + 1, True)
                out[k if not isinstance(k, list) else tuple(k)] = v
        return out, pos
    raise _Unsupported(f"unknown Thrift compact type {ttype}")


def _read_struct(buf: bytes, pos: int, end: int, depth: int = 0) -> tuple[dict, int]:
    """Decode a compact-protocol struct -> ({field id: value}, new pos).

    Unknown fields are decoded generically (and so skipped): newer writers may add
    optional fields to page headers without breaking this reader.
    """
    if depth > _MAX_DEPTH:
        raise _Unsupported("Thrift nesting too deep")
    fields = {}
    last = 0
    while True:
        if pos >= end:
            raise _Truncated("struct runs past the buffer")
        h = buf[pos]
        pos += 1
        if h == 0:  # STOP
            return fields, pos
        ttype, delta = h & 0x0F, h >> 4
        if delta:
            fid = last + delta
        else:  # long form: explicit zigzag i16 field id
            v, pos = _varint(buf, pos, end)
            fid = _zigzag(v)
        fields[fid], pos = _read_value(buf, pos, end, ttype, depth)
        last = fid


# --------------------------------------------------------------------------------------
# Parquet constants (parquet.thrift)
# --------------------------------------------------------------------------------------

_DATA_PAGE, _DATA_PAGE_V2 = 0, 3            # PageType (INDEX_PAGE=1, DICTIONARY_PAGE=2 unsupported)
_PLAIN, _RLE = 0, 3                          # Encoding

# Arrow value type -> (Parquet physical type, on-disk dtype, expected logical-type JSON(s)).
# Parquet stores 8/16-bit integers as INT32 annotated with their width (converted on read).
_INT_JSON = '{{"Type":"Int","bitWidth":{},"isSigned":{}}}'
_VALUE_TYPES = {
    pa.float32(): ("FLOAT", "<f4", ('{"Type":"None"}',)),
    pa.float64(): ("DOUBLE", "<f8", ('{"Type":"None"}',)),
    pa.int8(): ("INT32", "<i4", (_INT_JSON.format(8, "true"),)),
    pa.int16(): ("INT32", "<i4", (_INT_JSON.format(16, "true"),)),
    pa.int32(): ("INT32", "<i4", ('{"Type":"None"}', _INT_JSON.format(32, "true"))),
    pa.int64(): ("INT64", "<i8", ('{"Type":"None"}', _INT_JSON.format(64, "true"))),
    pa.uint8(): ("INT32", "<i4", (_INT_JSON.format(8, "false"),)),
    pa.uint16(): ("INT32", "<i4", (_INT_JSON.format(16, "false"),)),
    pa.uint32(): ("INT32", "<i4", (_INT_JSON.format(32, "false"),)),
    pa.uint64(): ("INT64", "<i8", (_INT_JSON.format(64, "false"),)),
}

# Header + level streams are small (tens of bytes for long lists); read this much per page
# first and only go back to the file when a page's levels are larger.
_PROBE = 4096
_MAX_HEADER = 1 << 20  # a page header larger than this is damage, not statistics


# --------------------------------------------------------------------------------------
# RLE / bit-packed hybrid level streams: verify, do not materialise
# --------------------------------------------------------------------------------------

def _unpack_bits(buf, off: int, n_groups: int, bit_width: int) -> np.ndarray:
    """Values of ``n_groups`` bit-packed groups (8 values each, LSB first)."""
    raw = np.frombuffer(buf, np.uint8, n_groups * bit_width, off)
    bits = np.unpackbits(raw, bitorder="little")
    if bit_width == 1:
        return bits
    weights = (1 << np.arange(bit_width)).astype(np.int64)
    return bits.reshape(-1, bit_width) @ weights


def _runs(buf, pos: int, end: int, bit_width: int, n: int):
    """Iterate the runs of an RLE/bit-packed hybrid stream holding ``n`` levels.

    Yields ``(start, count, value, None)`` for an RLE run and ``(start, count, offset,
    groups)`` for a bit-packed run of ``groups`` groups at ``buf[offset]`` (of which only
    the first ``count`` values count: the last group may be padded). Raises
    :class:`_Unsupported` if the stream ends early or an RLE run overshoots ``n`` (an
    encoder never does that).
    """
    vbytes = (bit_width + 7) // 8
    i = 0
    while i < n:
        h, pos = _varint(buf, pos, end)
        if h & 1:  # bit-packed: h >> 1 groups of 8 values
            groups = h >> 1
            nbytes = groups * bit_width
            if groups == 0 or pos + nbytes > end:
                raise _Unsupported("bad bit-packed level run")
            count = min(groups * 8, n - i)
            yield i, count, pos, groups
            pos += nbytes
        else:  # RLE: h >> 1 copies of one value stored in ceil(bit_width / 8) bytes
            count = h >> 1
            if pos + vbytes > end or count > n - i:
                raise _Unsupported("bad RLE level run")
            value = int.from_bytes(buf[pos:pos + vbytes], "little")
            pos += vbytes
            yield i, count, value, None
        i += count


def _check_def_levels(buf, pos: int, end: int, bit_width: int, n: int, max_def: int) -> None:
    """Every definition level must be ``max_def``: no null list, no null element."""
    for _, count, v, groups in _runs(buf, pos, end, bit_width, n):
        if groups is None:
            if v != max_def and count:
                raise _Unsupported("null list or element")
        elif not (_unpack_bits(buf, v, groups, bit_width)[:count] == max_def).all():
            raise _Unsupported("null list or element")


# Bit-packed repetition runs up to this many values are checked with Python integers
# (a long-list page has one short literal run per row start; numpy costs ~10 us a call).
_SMALL_RUN = 512


def _count_row_starts(buf, pos: int, end: int, n: int, first: int, list_size: int) -> int:
    """Verify repetition levels of a top-level list column; return the rows started.

    Level 0 starts a row, 1 continues it. ``first`` is the chunk-wide index of the
    page's first level (v1 pages may split a row). Every 0 must sit at a multiple of
    ``list_size`` and every 1 elsewhere: with the caller's check that the chunk holds
    exactly ``n_rows * list_size`` levels, this proves every row has exactly
    ``list_size`` values.
    """
    zeros = 0
    for i, count, v, groups in _runs(buf, pos, end, 1, n):
        if count == 0:
            continue
        p = first + i
        s0 = -(-p // list_size) * list_size  # first row start at or after p
        n_starts = 0 if s0 >= p + count else (p + count - 1 - s0) // list_size + 1
        if groups is None:
            # an RLE run of 0s must be exactly row starts, a run of 1s must contain none
            if v == 0 and (count != 1 or p % list_size) and list_size != 1:
                raise _Unsupported("repetition levels do not match the list size")
            if v == 1 and n_starts:
                raise _Unsupported("repetition levels do not match the list size")
            if v > 1:
                raise _Unsupported("repetition level > 1")
            if v == 0:
                zeros += count
        elif count <= _SMALL_RUN:
            # bit width 1: bit k is level k; the zero bits must be exactly the row starts
            bits = int.from_bytes(buf[v:v + groups], "little")
            zero_bits = ~bits & ((1 << count) - 1)
            expect = 0
            for s in range(s0 - p, count, list_size):
                expect |= 1 << s
            if zero_bits != expect:
                raise _Unsupported("repetition levels do not match the list size")
            zeros += n_starts
        else:
            z = np.flatnonzero(_unpack_bits(buf, v, groups, 1)[:count] == 0)
            if z.size != n_starts or (z.size and ((z + p) % list_size).any()):
                raise _Unsupported("repetition levels do not match the list size")
            zeros += n_starts
    return zeros


def _check_levels_py(buf, rep: tuple[int, int], dfn: tuple[int, int], def_width: int, n: int,
                     first: int, list_size: int, max_def: int) -> int:
    """Reference (pure Python) level check of one page -> rows started; raises :class:`_Unsupported`."""
    rows = _count_row_starts(buf, rep[0], rep[1], n, first, list_size)
    _check_def_levels(buf, dfn[0], dfn[1], def_width, n, max_def)
    return rows


# A level-run header is a varint of (count << 1 | kind); count <= a page's value count, an
# i32 in the Parquet format, so a valid header never takes more than 5 bytes (35 bits).
_MAX_RUN_VARINT_BYTES = 5


@njit(cache=True, nogil=True)
def _run_header(buf, pos, end):
    """Varint level-run header at ``buf[pos]`` -> (value, new pos); value -1: damaged."""
    result = np.int64(0)
    shift = 0
    while True:
        if pos >= end or shift >= 7 * _MAX_RUN_VARINT_BYTES:
            return np.int64(-1), pos
        b = np.int64(buf[pos])
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


@njit(cache=True, nogil=True)
def _rep_levels_nb(buf, pos, end, n, first, list_size):
    """:func:`_count_row_starts` over a uint8 array: rows started, or -1 (not the simple layout)."""
    zeros = np.int64(0)
    i = np.int64(0)
    while i < n:
        h, pos = _run_header(buf, pos, end)
        if h < 0:
            return -1
        if h & 1:  # bit-packed, bit width 1: h >> 1 groups of 8 levels in as many bytes
            groups = h >> 1
            if groups == 0 or pos + groups > end:
                return -1
            count = min(groups * 8, n - i)
            p = first + i
            nxt = (-(-p // list_size)) * list_size - p  # next row start, relative to the run
            j = np.int64(0)
            while j < count:
                if (j & 7) == 0 and j + 8 <= count and nxt >= j + 8:
                    if buf[pos + (j >> 3)] != 0xFF:  # eight continuation levels
                        return -1
                    j += 8
                    continue
                bit = (buf[pos + (j >> 3)] >> (j & 7)) & 1
                if j == nxt:
                    if bit != 0:
                        return -1
                    zeros += 1
                    nxt += list_size
                elif bit != 1:
                    return -1
                j += 1
            pos += groups
        else:  # RLE: h >> 1 copies of one level stored in one byte
            count = h >> 1
            if pos + 1 > end or count > n - i:
                return -1
            v = buf[pos]
            pos += 1
            if count:
                p = first + i
                s0 = (-(-p // list_size)) * list_size
                if v == 0:
                    if list_size != 1 and (count != 1 or p % list_size):
                        return -1
                    zeros += count
                elif v == 1:
                    if s0 < p + count:  # a row start inside a run of continuations
                        return -1
                else:
                    return -1
        i += count
    return zeros


@njit(cache=True, nogil=True)
def _def_levels_nb(buf, pos, end, bit_width, n, max_def):
    """:func:`_check_def_levels` over a uint8 array: True if every level is ``max_def``."""
    vbytes = (bit_width + 7) // 8
    i = np.int64(0)
    while i < n:
        h, pos = _run_header(buf, pos, end)
        if h < 0:
            return False
        if h & 1:
            groups = h >> 1
            nbytes = groups * bit_width
            if groups == 0 or pos + nbytes > end:
                return False
            count = min(groups * 8, n - i)
            for j in range(count):
                b0 = j * bit_width
                v = 0
                for k in range(bit_width):
                    b = b0 + k
                    v |= ((np.int64(buf[pos + (b >> 3)]) >> (b & 7)) & 1) << k
                if v != max_def:
                    return False
            pos += nbytes
        else:
            count = h >> 1
            if pos + vbytes > end or count > n - i:
                return False
            v = np.int64(0)
            for k in range(vbytes):
                v |= np.int64(buf[pos + k]) << (8 * k)
            pos += vbytes
            if count and v != max_def:
                return False
        i += count
    return True


@njit(cache=True, nogil=True)
def _levels_nb(buf, rep_lo, rep_hi, def_lo, def_hi, def_width, n, first, list_size, max_def):
    """Both level streams of one page: rows started, or -1."""
    rows = _rep_levels_nb(buf, rep_lo, rep_hi, n, first, list_size)
    if rows < 0 or not _def_levels_nb(buf, def_lo, def_hi, def_width, n, max_def):
        return -1
    return rows


# the numba path's integers are int64: larger values (only in damaged headers) are refused
_I64_MAX = (1 << 63) - 1


def _check_levels_nb(buf, rep: tuple[int, int], dfn: tuple[int, int], def_width: int, n: int,
                     first: int, list_size: int, max_def: int) -> int:
    """Compiled :func:`_check_levels_py` (same result, same refusals)."""
    if first + n > _I64_MAX // 2 or list_size > _I64_MAX // 2 or max_def > _I64_MAX:
        raise _Unsupported("level counts out of range")
    rows = _levels_nb(np.frombuffer(buf, np.uint8), rep[0], rep[1], dfn[0], dfn[1], def_width, n,
                      first, list_size, max_def)
    if rows < 0:
        raise _Unsupported("repetition or definition levels not those of full lists")
    return rows


# the level check used by the reader (tests swap in the reference to compare both)
_check_levels = _check_levels_nb


@njit(cache=True, nogil=True)
def _narrow_nb(src, dst, lo, hi):
    """``dst[:] = src`` if every value lies in ``[lo, hi]`` (-> True), else False."""
    bad = False
    for k in range(src.size):  # branch-free: vectorised
        v = src[k]
        bad |= (v < lo) | (v > hi)
        dst[k] = v
    return not bad


# --------------------------------------------------------------------------------------
# Page headers: decoded once per distinct header
# --------------------------------------------------------------------------------------

# Page headers of one column are usually identical from page to page and row group to row
# group (same value count and size, no statistics). Parsing is deterministic and a header
# that parsed to its STOP byte reads no byte past it (and needs no more buffer than its own
# length), so a probe starting with exactly the bytes of a header seen before decodes to the
# same result: the checked summary of each header is kept by its bytes.
_HEADERS: dict[bytes, tuple] = {}
_HEADER_LENS: list[int] = []
_MAX_HEADER_LENS = 8
_MAX_HEADERS = 1024
_MAX_CACHED_HEADER = 256


def _page_summary(hdr: dict) -> tuple:
    """Check a decoded page header -> ``(v2, size, n, v2_levels)``.

    ``v2``: a DATA_PAGE_V2; ``size``: page bytes after the header; ``n``: values (and
    levels); ``v2_levels``: ``(rep_len, def_len, num_rows)`` of a v2 page, else None.
    Raises :class:`_Unsupported` for anything but an uncompressed PLAIN data page without
    nulls (v1 level encodings RLE).
    """
    ptype = hdr.get(1)
    size = hdr.get(3)
    if not isinstance(size, int) or size < 0 or hdr.get(2) != size:
        raise _Unsupported("bad page sizes")  # uncompressed: both sizes must agree
    if ptype == _DATA_PAGE and isinstance(hdr.get(5), dict):
        dp = hdr[5]
        if dp.get(2) != _PLAIN or dp.get(3) != _RLE or dp.get(4) != _RLE:
            raise _Unsupported("page encodings")
        v2_levels = None
    elif ptype == _DATA_PAGE_V2 and isinstance(hdr.get(8), dict):
        dp = hdr[8]
        rep_len, def_len = dp.get(6), dp.get(5)
        if dp.get(4) != _PLAIN or dp.get(2) != 0 or not isinstance(rep_len, int) \
                or not isinstance(def_len, int) or rep_len < 0 or def_len < 0:
            raise _Unsupported("page encoding or nulls")
        if rep_len + def_len > size:
            raise _Unsupported("bad level lengths")
        v2_levels = (rep_len, def_len, dp.get(3))
    else:  # dictionary, index or unknown page type
        raise _Unsupported(f"page type {ptype}")
    n = dp.get(1)
    if not isinstance(n, int) or n <= 0:
        raise _Unsupported("bad page value count")
    return v2_levels is not None, size, n, v2_levels


def _page_header(head: bytes) -> tuple[tuple, int]:
    """(:func:`_page_summary`, header length) of the page header at ``head[0]``."""
    for hlen in _HEADER_LENS:
        if hlen <= len(head):
            hit = _HEADERS.get(head[:hlen])
            if hit is not None:
                return hit, hlen
    hdr, hlen = _read_struct(head, 0, len(head))
    summary = _page_summary(hdr)
    if hlen <= _MAX_CACHED_HEADER:
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
            _HEADER_LENS.clear()
        if hlen not in _HEADER_LENS and len(_HEADER_LENS) < _MAX_HEADER_LENS:
            _HEADER_LENS.append(hlen)
        if hlen in _HEADER_LENS:
            _HEADERS[bytes(head[:hlen])] = summary
    return summary, hlen


# --------------------------------------------------------------------------------------
# Column chunk reader
# --------------------------------------------------------------------------------------

def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise _Unsupported("file shorter than its metadata says")
    return data


def _preadv_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from the file at ``offset`` (directly: no intermediate buffer)."""
    done, n = 0, len(view)
    while done < n:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise _Unsupported("file shorter than its metadata says")
        done += got


def _preadv_all(fd: int, views: list, offset: int) -> None:
    """Fill the buffers ``views`` from consecutive file bytes starting at ``offset``."""
    got = os.preadv(fd, views, offset)
    for view in views:
        n = len(view)
        if got < n:  # short read (or end of file): finish buffer by buffer
            _preadv_exact(fd, memoryview(view)[max(got, 0):], offset + max(got, 0))
        got -= n
        offset += n


def _check_footer(fd: int, pf_metadata) -> None:
    """The file must end with a plain footer of exactly ``pf_metadata``'s length.

    Cheap guard against a ``path`` that is not the file ``pf_metadata`` came from (or was
    rewritten since): offsets from other metadata would point at unrelated bytes.
    Encrypted footers (magic ``PARE``) are refused too.
    """
    size = os.fstat(fd).st_size
    if size < 12:
        raise _Unsupported("not a Parquet file")
    tail = _pread_exact(fd, 8, size - 8)
    if tail[4:] != b"PAR1" or int.from_bytes(tail[:4], "little") != pf_metadata.serialized_size:
        raise _Unsupported("file footer does not match the metadata")


def _find_column(pf_metadata, column: str):
    """(leaf index, arrow field) of top-level ``column``, or raise :class:`_Unsupported`."""
    schema = pf_metadata.schema
    leaves = [j for j in range(pf_metadata.num_columns)
              if schema.column(j).path == column or schema.column(j).path.startswith(column + ".")]
    if len(leaves) != 1:  # missing, or a struct/map with several leaves
        raise _Unsupported(f"{column}: not a single-leaf column")
    arrow_schema = schema.to_arrow_schema()  # applies the stored ARROW:schema (fixed_size_list)
    idx = arrow_schema.get_field_index(column)
    if idx < 0:
        raise _Unsupported(f"{column}: not a top-level field")
    return leaves[0], arrow_schema.field(idx)


def _plan(pf_metadata, column: str):
    """Check the static layout (schema + metadata) of ``column``; return what the reader needs."""
    if sys.byteorder != "little":  # PLAIN is little-endian; we copy bytes as they are
        raise _Unsupported("big-endian host")
    j, field = _find_column(pf_metadata, column)
    ftype = field.type
    if not pa.types.is_fixed_size_list(ftype):
        raise _Unsupported(f"{column}: not a fixed_size_list")
    spec = _VALUE_TYPES.get(ftype.value_type)
    if spec is None:
        raise _Unsupported(f"{column}: value type {ftype.value_type} not supported")
    physical, disk_dtype, logical = spec
    col = pf_metadata.schema.column(j)
    if (col.physical_type != physical or col.logical_type.to_json() not in logical
            or col.max_repetition_level != 1 or col.max_definition_level < 1
            or col.path != f"{column}.list.{col.name}"):
        raise _Unsupported(f"{column}: unexpected Parquet schema")
    return j, field, ftype.list_size, np.dtype(disk_dtype), col.max_definition_level


def _read_values(fd: int, values: memoryview, offset: int, head_len: int) -> bytes | None:
    """Fill ``values`` from the file at ``offset``; with ``head_len``, return that many bytes
    that follow them too (the next page's header: one read instead of two)."""
    if head_len:
        nxt = bytearray(head_len)
        _preadv_all(fd, [values, nxt], offset)
        return bytes(nxt)
    _preadv_exact(fd, values, offset)
    return None


class _ConsumerError(Exception):
    """An exception raised by a :class:`_BlockSink`'s consumer, carried out unchanged."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error


class _BlockSink:
    """Values of consecutive column chunks into one small reused buffer, handed to
    ``consume(first_row, block)`` each time it holds ``block_rows`` whole rows."""

    def __init__(self, list_size: int, dtype: np.dtype, block_rows: int, consume, buf: np.ndarray | None = None):
        self.list_size, self.consume = list_size, consume
        cap = max(1, int(block_rows)) * list_size
        if buf is None or buf.dtype != dtype or buf.size < cap:
            buf = np.empty(cap, dtype)
        self.buf, self.cap = buf, cap
        self.bytes = memoryview(buf).cast("B")
        self.itemsize = dtype.itemsize
        self.fill = self.row = 0

    def put(self, fd: int, offset: int, n: int, head_len: int) -> bytes | None:
        """Read ``n`` values at ``offset`` (the last read also brings ``head_len`` bytes after them)."""
        head = None
        isz = self.itemsize
        while n:
            take = min(n, self.cap - self.fill)
            view = self.bytes[self.fill * isz:(self.fill + take) * isz]
            head = _read_values(fd, view, offset, head_len if take == n else 0)
            self.fill += take
            offset += take * isz
            n -= take
            if self.fill == self.cap:
                self.flush()
        return head

    def flush(self) -> None:
        if self.fill:
            rows = self.fill // self.list_size
            try:
                self.consume(self.row, self.buf[:self.fill].reshape(rows, self.list_size))
            except BaseException as e:  # the consumer's own errors are not the reader's "unsupported"
                raise _ConsumerError(e) from e
            self.row += rows
            self.fill = 0


def _read_chunk(fd: int, cc, n_rows: int, list_size: int, disk_dtype: np.dtype, max_def: int,
                out: np.ndarray | None, sink: _BlockSink | None = None) -> None:
    """Fill ``out`` (flat, ``disk_dtype``) with the values of column chunk ``cc``, or pass
    them to ``sink``."""
    if cc.compression != "UNCOMPRESSED" or cc.dictionary_page_offset is not None:
        raise _Unsupported("compressed or dictionary-encoded")
    if not set(cc.encodings) <= {"PLAIN", "RLE"}:
        raise _Unsupported(f"encodings {cc.encodings}")
    total = n_rows * list_size
    if cc.num_values != total:
        raise _Unsupported("value count differs from rows * list_size")
    start = cc.data_page_offset
    end = start + cc.total_compressed_size
    if start < 0 or cc.total_compressed_size < 0:
        raise _Unsupported("bad chunk offsets")
    def_width = max_def.bit_length()
    itemsize = disk_dtype.itemsize
    out_bytes = memoryview(out).cast("B") if sink is None else None
    pos, done, rows = start, 0, 0
    probe = _PROBE
    head = None  # the bytes at pos, when the previous read brought them along
    while done < total:
        if pos >= end:
            raise _Unsupported("column chunk ends before all values")
        if head is None:
            head = _pread_exact(fd, min(probe, end - pos), pos)
        try:
            (v2, size, n, v2_levels), hlen = _page_header(head)
        except _Truncated:
            if len(head) == end - pos or probe >= _MAX_HEADER:
                raise _Unsupported("damaged page header") from None
            probe *= 4  # large statistics; retry with a bigger probe
            head = None
            continue
        body = pos + hlen
        if body + size > end:
            raise _Unsupported("page runs past the column chunk")

        if not v2:
            # v1: <u32 len><rep levels><u32 len><def levels><values>
            if hlen + 8 > len(head):
                lv = _pread_exact(fd, min(size, 8 + _PROBE), body)
            else:
                lv = memoryview(head)[hlen:hlen + size]
            if len(lv) < 4:
                raise _Unsupported("page too short")
            rep_len = int.from_bytes(lv[0:4], "little")
            if 4 + rep_len + 4 > size:
                raise _Unsupported("bad level lengths")
            if 4 + rep_len + 4 > len(lv):
                lv = _pread_exact(fd, min(size, 8 + rep_len + _PROBE), body)
            def_len = int.from_bytes(lv[4 + rep_len:8 + rep_len], "little")
            lev_bytes = 8 + rep_len + def_len
            if lev_bytes > size:
                raise _Unsupported("bad level lengths")
            if lev_bytes > len(lv):
                lv = _pread_exact(fd, lev_bytes, body)
            rep = (4, 4 + rep_len)
            dfn = (8 + rep_len, lev_bytes)
        else:
            rep_len, def_len, v2_rows = v2_levels
            lev_bytes = rep_len + def_len  # <= size (checked with the header)
            lv = (memoryview(head)[hlen:hlen + lev_bytes] if hlen + lev_bytes <= len(head)
                  else _pread_exact(fd, lev_bytes, body))
            rep = (0, rep_len)
            dfn = (rep_len, lev_bytes)

        if n > total - done:
            raise _Unsupported("bad page value count")
        if size - lev_bytes != n * itemsize:  # all values present -> exactly n PLAIN values
            raise _Unsupported("page size does not match its value count")
        page_rows = _check_levels(lv, rep, dfn, def_width, n, done, list_size, max_def)
        if v2 and v2_rows != page_rows:
            raise _Unsupported("v2 page row count")
        # the values, and with them the start of the next page (one read instead of two)
        pos = body + size
        head_len = min(_PROBE, end - pos) if done + n < total and pos < end else 0
        if sink is not None:
            head = sink.put(fd, body + lev_bytes, n, head_len)
        else:
            head = _read_values(fd, out_bytes[done * itemsize:(done + n) * itemsize], body + lev_bytes, head_len)
        done += n
        rows += page_rows
        probe = _PROBE
    if pos != end or rows != n_rows:
        raise _Unsupported("column chunk does not end after its values")


# _plan parses the schema (~0.3 ms); a runner reads many row groups of the same file, so
# plans are kept per (file identity, metadata object, column). The footer check in
# _Source still guards every read against a file rewritten since.
_PLANS: dict = {}


def _cached_plan(path, st: os.stat_result, pf_metadata, column: str):
    key = (os.fspath(path), st.st_mtime_ns, st.st_size, pf_metadata.serialized_size, column)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 256:
            _PLANS.clear()
        plan = _PLANS[key] = _plan(pf_metadata, column)
    return plan


class _Source:
    """``path`` opened once (on first use) for the columns of one row group, its footer checked."""

    def __init__(self, path, pf_metadata):
        self.path, self.md = path, pf_metadata
        self.fd = self.st = None
        self.ok = False

    def open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
            self.st = os.fstat(self.fd)
            _check_footer(self.fd, self.md)
            self.ok = True
        if not self.ok:  # the footer check failed (or raised) before
            raise _Unsupported("file footer does not match the metadata")
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.ok = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BufferPool:
    """Output buffers of :func:`read_row_groups` kept from one batch to the next.

    A fresh buffer of tens of MB is new memory to the kernel: filling it faults every
    page in (``preadv`` into it measured 3-5 GB/s instead of 12.5 GB/s into pages already
    mapped, ~60 us per LSTCam event; glibc returns blocks above 32 MB to the system on
    every free). A buffer is reused only when no array made from it is alive any more
    (its reference count shows no view), so an earlier batch someone still holds is
    never overwritten: it then just gets a new buffer.
    """

    def __init__(self):
        self._bufs: dict = {}

    def get(self, key, n: int, dtype) -> np.ndarray:
        buf = self._bufs.get(key)
        # references: the dict, ``buf`` and getrefcount's argument; any view adds one
        if buf is None or buf.dtype != dtype or buf.size < n or sys.getrefcount(buf) > 3:
            buf = self._bufs[key] = np.empty(n, dtype)
        return buf[:n]


# a damaged header may decode into values of the wrong kind: the fast path then steps aside
_DAMAGE = (ValueError, TypeError, KeyError, OverflowError, struct.error)


def _check_row_groups(pf_metadata, indices) -> None:
    for index in indices:
        if not 0 <= index < pf_metadata.num_row_groups:
            raise IndexError(f"row group {index} out of range ({pf_metadata.num_row_groups} row groups)")


def _column_chunks(pf_metadata, j: int, indices) -> list:
    """``(rows, column chunk of leaf j)`` of each row group of ``indices``, checked against the schema."""
    scol = pf_metadata.schema.column(j)
    chunks = []
    for index in indices:
        rg = pf_metadata.row_group(index)
        cc = rg.column(j)
        if cc.path_in_schema != scol.path or cc.physical_type != scol.physical_type:
            raise _Unsupported("row group metadata does not match the schema")
        chunks.append((rg.num_rows, cc))
    return chunks


def _read_chunks(fd: int, chunks, list_size: int, disk_dtype: np.dtype, max_def: int,
                 out: np.ndarray | None, sink: _BlockSink | None = None) -> None:
    """The values of ``chunks`` (:func:`_column_chunks`), one after the other, into ``out``
    (flat) or ``sink``."""
    done = 0
    for n_rows, cc in chunks:
        if n_rows:
            _read_chunk(fd, cc, n_rows, list_size, disk_dtype, max_def,
                        None if out is None else out[done:done + n_rows * list_size], sink)
        elif cc.num_values != 0:
            raise _Unsupported("values in an empty row group")
        done += n_rows * list_size


def _read_flat(src: _Source, indices, column: str, pool: BufferPool | None = None):
    """(flat values of row groups ``indices``, one after the other, in the Arrow dtype;
    arrow field) or raise :class:`_Unsupported`."""
    pf_metadata = src.md
    fd = src.open()
    j, field, list_size, disk_dtype, max_def = _cached_plan(src.path, src.st, pf_metadata, column)
    chunks = _column_chunks(pf_metadata, j, indices)
    # several row groups go into one buffer: a batch of them is one contiguous array
    total = sum(n for n, _ in chunks) * list_size
    out = np.empty(total, disk_dtype) if pool is None else pool.get((column, "disk"), total, disk_dtype)
    _read_chunks(fd, chunks, list_size, disk_dtype, max_def, out)
    want = np.dtype(field.type.value_type.to_pandas_dtype())
    if want != out.dtype.newbyteorder("="):
        if want.itemsize < out.dtype.itemsize:
            # 8/16-bit integers are stored widened to INT32; pyarrow's writer keeps them in
            # range, anything else is not a file we understand
            info = np.iinfo(want)
            narrow = np.empty(out.size, want) if pool is None else pool.get((column, "out"), out.size, want)
            if not _narrow_nb(out, narrow, info.min, info.max):
                raise _Unsupported("integer out of range of its declared width")
            out = narrow
        else:  # uint32/uint64 stored as INT32/INT64: same bits
            out = out.view(want)
    return out, field


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------

def read_fixed_size_list(path, pf_metadata, index: int, column: str) -> np.ndarray | None:
    """Read one ``fixed_size_list<numeric>`` column of a row group without pyarrow's decoder.

    Parameters
    ----------
    path : str or os.PathLike
        Local Parquet file.
    pf_metadata : pyarrow.parquet.FileMetaData
        Its footer (``ParquetFile.metadata``).
    index : int
        Row group.
    column : str
        Top-level column of Arrow type ``fixed_size_list<T>[list_size]``, ``T`` a
        fixed-width integer or float32/float64.

    Returns
    -------
    numpy.ndarray or None
        ``(n_rows, list_size)`` array of dtype ``T`` (equal to what pyarrow reads), or
        ``None`` if the column chunk is not UNCOMPRESSED / PLAIN / dictionary-free with
        every list and element present and intact (the caller then uses pyarrow).
        I/O errors (e.g. a missing file) propagate.
    """
    _check_row_groups(pf_metadata, [index])
    with _Source(path, pf_metadata) as src:
        return _read_fixed_size_list(src, [index], column)


def _read_fixed_size_list(src: _Source, indices, column: str, pool=None) -> np.ndarray | None:
    try:
        flat, field = _read_flat(src, indices, column, pool)
    except (_Unsupported, *_DAMAGE):
        return None
    return flat.reshape(-1, field.type.list_size)


def stream_fixed_size_list(path, pf_metadata, indices, column: str, block_rows: int, consume,
                           buf: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
    """Feed a ``fixed_size_list<numeric>`` column to ``consume`` block by block, not all at once.

    The values of row groups ``indices`` (one after the other) are read into one small
    buffer and handed over as soon as it holds ``block_rows`` rows, so that a consumer
    works on them while they are still in the CPU caches: reading a batch of tens of MB
    first and processing it after leaves it in main memory (for the R1 → DL1 stage that
    measured ~12 us an LSTCam event slower, benchmarks/RESULTS.md).

    Parameters
    ----------
    path, pf_metadata, column
        As for :func:`read_fixed_size_list`.
    indices : sequence of int
        Row groups, read in this order.
    block_rows : int
        Rows per block (the last block may have fewer).
    consume : callable
        ``consume(first_row, block)`` with ``block`` of shape ``(rows, list_size)`` in the
        Arrow value dtype and ``first_row`` counted from the first row of ``indices[0]``;
        called for consecutive blocks covering every row, in order. The block's buffer is
        reused once ``consume`` returns: copy what must be kept.
    buf : ndarray, optional
        A buffer to reuse (e.g. the one of the previous call, see the return value).

    Returns
    -------
    fed : bool
        Whether every row was fed. False: the column is not in the
        simple layout (or is damaged, or is an 8/16-bit integer, stored widened);
        ``consume`` may have been called for some of the rows, and the caller reads the
        column another way and feeds all of them again. I/O errors and the consumer's
        own exceptions propagate.
    buf : ndarray
        The buffer used (pass it to the next call).
    """
    indices = [int(i) for i in indices]
    _check_row_groups(pf_metadata, indices)
    try:
        with _Source(path, pf_metadata) as src:
            fd = src.open()
            j, field, list_size, disk_dtype, max_def = _cached_plan(src.path, src.st, pf_metadata, column)
            want = np.dtype(field.type.value_type.to_pandas_dtype())
            if want.itemsize != disk_dtype.itemsize:   # 8/16-bit integers stored as INT32
                return False, buf
            chunks = _column_chunks(pf_metadata, j, indices)
            block_rows = max(1, min(int(block_rows), sum(n for n, _ in chunks)))
            # uint32/uint64 are stored as INT32/INT64: the same bytes, read as the Arrow type
            sink = _BlockSink(list_size, want, block_rows, consume, buf)
            _read_chunks(fd, chunks, list_size, disk_dtype, max_def, None, sink)
            sink.flush()
            return True, sink.buf
    except _ConsumerError as e:
        raise e.error from None
    except (_Unsupported, *_DAMAGE):
        return False, buf


# ParquetFile.schema_arrow converts the schema on every access (~40 us)
_SCHEMAS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _schema_arrow(pf: pq.ParquetFile) -> pa.Schema:
    try:
        return _SCHEMAS[pf]
    except (KeyError, TypeError):
        schema = pf.schema_arrow
        try:
            _SCHEMAS[pf] = schema
        except TypeError:  # not weak-referenceable
            pass
        return schema


def read_row_group(pf: pq.ParquetFile, path, index: int, columns: list[str] | None,
                   fast_columns=("waveform",)) -> pa.Table:
    """``pf.read_row_group(index, columns=columns)``, with ``fast_columns`` read by the fast path.

    Parameters
    ----------
    pf : pyarrow.parquet.ParquetFile
        The open file (its metadata and Arrow schema are used).
    path : str or os.PathLike
        The same file's path (the fast path reads it with ``os.preadv``).
    index : int
        Row group.
    columns : list of str or None
        Columns, as for :meth:`pyarrow.parquet.ParquetFile.read_row_group` (``None``: all).
    fast_columns : iterable of str
        Columns to try the fast path on; any that is not a top-level
        ``fixed_size_list<numeric>`` stored in the simple layout is read by pyarrow.

    Returns
    -------
    pyarrow.Table
        Equal to pyarrow's result: same columns in the same order, same types and
        schema metadata; each column is a single chunk.
    """
    return _read(pf, path, [index], columns, fast_columns, lambda cols: pf.read_row_group(index, columns=cols))


def read_row_groups(pf: pq.ParquetFile, path, indices, columns: list[str] | None,
                    fast_columns=("waveform",), pool: BufferPool | None = None) -> pa.Table:
    """``pf.read_row_groups(indices, columns=columns)`` as one batch, ``fast_columns`` by the fast path.

    As :func:`read_row_group` for several row groups: the fast columns of all of them are
    read into one buffer, and every column of the result is a single chunk (pyarrow's
    columns are combined), so a batch of small row groups costs one set of Python calls
    per column instead of one per row group. ``indices`` must not be empty. With a
    ``pool`` (:class:`BufferPool`), the fast columns go into buffers it keeps for the next
    call.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("read_row_groups: no row group given")
    if len(indices) == 1:
        def slow(cols):
            return pf.read_row_group(indices[0], columns=cols)
    else:
        def slow(cols):
            return pf.read_row_groups(indices, columns=cols).combine_chunks()
    return _read(pf, path, indices, columns, fast_columns, slow, pool)


def _read(pf, path, indices, columns, fast_columns, slow_read, pool=None) -> pa.Table:
    schema = _schema_arrow(pf)
    names = list(schema.names) if columns is None else list(dict.fromkeys(columns))
    fast_set = set(fast_columns or ())
    top = set(schema.names)
    if len(top) != len(schema.names) or not all(c in top for c in names):
        # duplicated names or nested/unknown selections: pyarrow's own rules apply
        return slow_read(columns)
    md = pf.metadata
    fast = {}
    wanted = [c for c in names if c in fast_set]
    if wanted:
        _check_row_groups(md, indices)
        with _Source(path, md) as src:  # one open and footer check for all the fast columns
            for c in wanted:
                arr = _read_fixed_size_list(src, indices, c, pool)
                if arr is not None:
                    fast[c] = arr
    if not fast:
        return slow_read(columns)
    # pyarrow reads the rest (with an empty list it still gives num_rows and the metadata)
    rest = slow_read([c for c in names if c not in fast])
    arrays, fields = [], []
    for c in names:
        field = schema.field(c)
        if c in fast:
            flat = fast[c].reshape(-1)
            values = pa.Array.from_buffers(field.type.value_type, flat.size,
                                           [None, pa.py_buffer(flat)])  # zero-copy
            arrays.append(pa.FixedSizeListArray.from_arrays(values, type=field.type))
        else:
            arrays.append(rest.column(c))
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=rest.schema.metadata))
