"""Encoders for the written set: a fast PNG writer and COCO compressed RLE / instance tables."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(arr: np.ndarray, level: int = 1) -> bytes:
    """Minimal fast PNG encoder for uint8 grey (H, W) / RGB / RGBA arrays.

    Colour images use the 'Up' filter and zlib's RLE strategy (noisy tiles gain nothing from
    string matching, and it is ~2x faster than Pillow's default); grey masks use plain deflate."""
    a = np.ascontiguousarray(arr)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"encode_png needs uint8 (H, W), (H, W, 3) or (H, W, 4), got {a.shape} {a.dtype}")
    h, w = a.shape[:2]
    ch = 1 if a.ndim == 2 else a.shape[2]
    rows = a.reshape(h, w * ch)
    raw = np.empty((h, w * ch + 1), np.uint8)
    if ch == 1:
        raw[:, 0] = 0
        raw[:, 1:] = rows
        comp = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY)
    else:
        raw[:, 0] = 2  # Up
        raw[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
        comp = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = comp.compress(raw.tobytes()) + comp.flush()
    color_type = {1: 0, 3: 2, 4: 6}[ch]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _rle_string(counts: np.ndarray, starts: np.ndarray) -> list[str]:
    """COCO compressed RLE strings (pycocotools' rleToString), vectorised over many RLEs.

    ``counts`` concatenates every RLE's counts; ``starts`` (k + 1,) are the boundaries."""
    total = len(counts)
    if total == 0:
        return [""] * (len(starts) - 1)
    lengths = np.diff(starts)
    local = np.arange(total) - np.repeat(starts[:-1], lengths)
    x = counts.astype(np.int64).copy()
    d = local > 2
    x[d] -= counts[np.flatnonzero(d) - 2]
    cs, ms = [], []
    rem = x
    for _ in range(8):  # 8 x 5 bits cover |x| < 2**39
        c = rem & 0x1F
        rem = rem >> 5
        more = np.where((c & 0x10) != 0, rem != -1, rem != 0)
        cs.append(c)
        ms.append(more)
    C = np.stack(cs, 1)
    M = np.stack(ms, 1)
    emit = np.ones_like(M)
    emit[:, 1:] = np.cumprod(M[:, :-1], axis=1).astype(bool)
    chars = ((C | (M.astype(np.int64) << 5)) + 48).astype(np.uint8)
    s = chars[emit].tobytes().decode("ascii")
    nch = emit.sum(1)
    cum = np.concatenate(([0], np.cumsum(nch)))
    b = cum[starts]
    return [s[b[i] : b[i + 1]] for i in range(len(starts) - 1)]


def rle_encode(instances: np.ndarray, n: int | None = None) -> tuple[list[str], np.ndarray]:
    """COCO compressed RLE of every instance 1..n of an instance map, plus their pixel areas.

    Equivalent to ``pycocotools.mask.encode(np.asfortranarray(instances == k))['counts']`` for
    each k, computed for all instances in one pass."""
    rles, areas, _ = instance_table(instances, n)
    return rles, areas


def instance_table(instances: np.ndarray, n: int | None = None, rle: bool = True) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    """(COCO RLE strings, areas (n,), bboxes (n, 4) as [x, y, w, h]) of instances 1..n, from one
    pass over the column-major runs of the map."""
    inst = np.asarray(instances)
    H, W = inst.shape
    n = int(inst.max()) if n is None else int(n)
    flat = inst.T.ravel()  # column-major, as COCO
    N = flat.size
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    st = np.concatenate(([0], change))
    en = np.concatenate((change, [N]))
    val = flat[st]
    fg = val > 0
    st, en, val = st[fg], en[fg], val[fg]
    order = np.argsort(val, kind="stable")
    st, en, val = st[order], en[order], val[order]
    areas = np.bincount(val, weights=en - st, minlength=n + 1)[1:].astype(np.int64)
    if n == 0:
        return ([] if rle else None), areas, np.zeros((0, 4), np.int64)
    first = np.concatenate(([True], val[1:] != val[:-1]))
    last = np.concatenate((val[1:] != val[:-1], [True]))
    if int(first.sum()) != n or val[0] != 1 or val[-1] != n:
        raise ValueError("instance ids must be 1..n, each present")
    # bounding boxes: a run may wrap from the bottom of one column to the top of the next
    gstart = np.flatnonzero(first)
    c0, c1 = st // H, (en - 1) // H
    wrap = c1 > c0
    r0 = np.where(wrap, 0, st % H)
    r1 = np.where(wrap, H - 1, (en - 1) % H)
    x0 = np.minimum.reduceat(c0, gstart)
    x1 = np.maximum.reduceat(c1, gstart)
    y0 = np.minimum.reduceat(r0, gstart)
    y1 = np.maximum.reduceat(r1, gstart)
    bboxes = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1).astype(np.int64)
    if not rle:
        return None, areas, bboxes
    prev_end = np.concatenate(([0], en[:-1]))
    prev_end[first] = 0
    gap = st - prev_end
    ln = en - st
    nrun = len(st)
    trail = last & (en < N)  # a final background run (pycocotools writes none when it is empty)
    pos = 2 * np.arange(nrun) + np.cumsum(trail) - trail
    total = 2 * nrun + int(trail.sum())
    counts = np.empty(total, np.int64)
    counts[pos] = gap
    counts[pos + 1] = ln
    counts[pos[trail] + 2] = N - en[trail]
    starts = np.concatenate((pos[first], [total]))
    return _rle_string(counts, starts), areas, bboxes
