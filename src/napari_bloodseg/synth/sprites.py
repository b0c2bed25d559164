"""Sprites: a sample warped (rotation, scale, flip, colour jitter) into a premultiplied RGB + alpha patch, and pasting it onto a canvas with its instance id."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pool import PoolSample, SamplePool


@dataclass
class _Sprite:
    rgb: np.ndarray  # (h, w, 3) float32, premultiplied by alpha
    alpha: np.ndarray  # (h, w, 1) float32 soft coverage (bilinear)
    hard: np.ndarray  # (h, w) bool: the object's mask (alpha >= 0.5)
    cls: int
    path: str
    radius: float  # equivalent radius sqrt(area / pi)
    bg: np.ndarray | None  # (3,) median colour around the cell in its source, if any
    mean: np.ndarray | None  # (3,) mean colour inside the cell (RBC field sprites only)


def _warp(rgb: np.ndarray, mask: np.ndarray, angle: float, scale: float, flip: bool) -> np.ndarray | None:
    """Rotate (degrees) / scale / flip a sample about its mask's centre, bilinear.

    Returns rgba float32 (h, w, 4) with *premultiplied* colour (rgb * alpha) and soft alpha in
    [..., 3], cropped to the warped mask (+1 px); None if nothing is left."""
    if flip:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    r0, r1, c0, c1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    h, w = mask.shape
    p = 2
    # premultiplied alpha: the source's own background never bleeds into the cell's rim
    src = np.zeros((h + 2 * p, w + 2 * p, 4), np.float32)
    src[p:-p, p:-p, 3] = mask
    np.multiply(rgb, src[p:-p, p:-p, 3:4], out=src[p:-p, p:-p, :3])
    r0, r1, c0, c1 = int(r0), int(r1), int(c0), int(c1)  # Python ints: keep the maths float32
    cy, cx = (r0 + r1 - 1) / 2 + p, (c0 + c1 - 1) / 2 + p
    th = math.radians(angle)
    ca, sa = math.cos(th), math.sin(th)
    hh, hw = (r1 - r0) / 2 * scale, (c1 - c0) / 2 * scale
    ey = abs(ca) * hh + abs(sa) * hw
    ex = abs(sa) * hh + abs(ca) * hw
    Ho, Wo = int(math.ceil(2 * ey)) + 3, int(math.ceil(2 * ex)) + 3
    oy = np.arange(Ho, dtype=np.float32) - (Ho - 1) / 2
    ox = np.arange(Wo, dtype=np.float32) - (Wo - 1) / 2
    inv = 1.0 / scale
    # inverse map: src = c + R(-th) * out / scale
    iy = cy + inv * (ca * oy[:, None] - sa * ox[None, :])
    ix = cx + inv * (sa * oy[:, None] + ca * ox[None, :])
    Hs, Ws = src.shape[:2]
    np.clip(iy, 0, Hs - 1.001, out=iy)
    np.clip(ix, 0, Ws - 1.001, out=ix)
    y0 = np.floor(iy)
    x0 = np.floor(ix)
    fy = (iy - y0)[..., None]  # float32 throughout (an int array here would promote to float64)
    fx = (ix - x0)[..., None]
    flat = src.reshape(-1, 4)
    i00 = y0.astype(np.intp) * Ws + x0.astype(np.intp)
    a = np.take(flat, i00, axis=0)  # np.take: much faster than fancy indexing here
    b = np.take(flat, i00 + 1, axis=0)
    top = a + (b - a) * fx
    a = np.take(flat, i00 + Ws, axis=0)
    b = np.take(flat, i00 + Ws + 1, axis=0)
    top += (a + (b - a) * fx - top) * fy
    out = top
    hard = out[..., 3] >= 0.5
    if not hard.any():
        return None
    ys, xs = np.nonzero(hard.any(1))[0], np.nonzero(hard.any(0))[0]
    return np.ascontiguousarray(out[max(ys[0] - 1, 0) : ys[-1] + 2, max(xs[0] - 1, 0) : xs[-1] + 2])


def _make_sprite(
    pool: SamplePool, s: PoolSample, rng: np.random.Generator, scale: float, color_jitter: float, stats: bool = False
) -> _Sprite | None:
    """A sample warped at a random angle and flip, ``scale`` x the pool's scale; ``stats`` also
    measures its source background and mean colour (for RBC fields)."""
    rgb, mask = pool.load(s)
    ang = float(rng.uniform(0.0, 360.0))
    flip = bool(rng.random() < 0.5)
    gain = rng.uniform(1 - color_jitter, 1 + color_jitter, 3).astype(np.float32) if color_jitter > 0 else None
    rgba = _warp(rgb, mask, ang, scale * pool.scale, flip)
    if rgba is None:
        return None
    rgb_f = rgba[..., :3]
    if gain is not None:
        rgb_f = rgb_f * gain
    alpha = rgba[..., 3:4]
    hard = alpha[..., 0] >= 0.5
    bg, mean = None, None
    if stats:
        outside = ~mask
        # the source's plain background around the cell, when the sample shows enough of it
        bg = np.median(rgb[outside], 0).astype(np.float32) if outside.sum() >= 8 else None
        mean = rgb[mask].mean(0).astype(np.float32) * (gain if gain is not None else np.float32(1.0))
    return _Sprite(
        rgb=np.ascontiguousarray(rgb_f, dtype=np.float32),
        alpha=np.ascontiguousarray(alpha),
        hard=hard,
        cls=int(s.cls),
        path=s.path,
        radius=math.sqrt(float(hard.sum()) / math.pi),
        bg=bg,
        mean=mean,
    )


def _d8(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations by 90° / flips of an image (a view)."""
    return np.rot90(a if k < 4 else a[:, ::-1], k % 4)


def _paste_hard(canvas: np.ndarray, inst: np.ndarray, rgb8: np.ndarray, hard: np.ndarray, top: int, left: int, iid: int) -> bool:
    """Copy a pre-blended uint8 sprite's masked pixels at (top, left) (RBCs into fields)."""
    H, W = inst.shape
    h, w = hard.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y0 >= y1 or x0 >= x1:
        return False
    sy, sx = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    m = hard[sy, sx]
    np.copyto(canvas[y0:y1, x0:x1], rgb8[sy, sx], where=m[..., None])
    inst[y0:y1, x0:x1][m] = iid
    return True


def _paste(canvas: np.ndarray, inst: np.ndarray, sp: _Sprite, top: int, left: int, iid: int) -> bool:
    """Blend ``sp`` at (top, left) into the float canvas; its hard mask takes the instance map."""
    H, W = inst.shape
    h, w = sp.hard.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y0 >= y1 or x0 >= x1:
        return False
    sy, sx = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    reg = canvas[y0:y1, x0:x1]
    reg *= 1.0 - sp.alpha[sy, sx]  # premultiplied "over"
    reg += sp.rgb[sy, sx]
    inst[y0:y1, x0:x1][sp.hard[sy, sx]] = iid
    return True
