"""Procedural blood-smear renderer: synthetic Giemsa/Wright-look images with exact ground truth.

Every object is drawn only inside its own bounding box from a signed-distance outline
(hard class mask = inside, anti-aliased colour at the edge) and an optical-density colour
model: the image is ``light * exp(-OD)``, so overlapping RBCs darken like real ones, while
platelets and WBCs are composited on top. The class mask and instance map record exactly
what is visible (objects drawn later win their pixels).

Sizes are relative to the healthy RBC diameter ``D`` (``rbc_diameter``, about 7.5 um);
the project's model scale is D = 36 px.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .classes import CLASS_NAMES, WBC_CLASSES, BloodClass, class_id

__all__ = ["Cell", "RenderedSmear", "render_cell", "render_smear", "sample_smear"]

MIN_SIZE = 64
MIN_DIAMETER, MAX_DIAMETER = 12.0, 120.0
_GAP = 3.0  # touching=False: centre distance >= rb1 + rb2 + _GAP, so >= 2 background px between masks


@dataclass
class Cell:
    """One drawn object."""

    id: int  # instance id (1..n), matches `instances`
    cls: int  # class id (classes.BloodClass)
    center: tuple[float, float]  # (row, col) of the drawn shape; may lie outside the image for cut cells
    bbox: tuple[int, int, int, int]  # (min_row, min_col, max_row, max_col) of visible pixels, exclusive max


@dataclass
class RenderedSmear:
    """A rendered field and its exact ground truth."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8 class ids 0..9, exactly what is visible
    instances: np.ndarray  # (H, W) int32 instance ids, 0 = background
    cells: list[Cell] = field(default_factory=list)  # cells with >= 1 visible pixel, by id


# --------------------------------------------------------------------------- colours
# Stain colours are optical densities relative to the plain background (235, 225, 225).
_BG_RGB = np.array([235.0, 225.0, 225.0])


def _od(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.log(_BG_RGB / np.asarray(rgb, dtype=np.float64)).astype(np.float32)


_C = {
    "rbc": _od((218, 146, 150)),
    "ring": _od((110, 80, 170)),
    "dot": _od((70, 20, 100)),
    "plt": _od((185, 145, 205)),
    "plt_gran": _od((105, 55, 145)),
    "neu_cyto": _od((226, 204, 216)),
    "neu_gran": _od((196, 156, 196)),
    "neu_nuc": _od((92, 44, 126)),
    "eos_cyto": _od((232, 180, 160)),
    "eos_gran": _od((212, 92, 62)),
    "eos_nuc": _od((108, 62, 138)),
    "bas_cyto": _od((196, 176, 216)),
    "bas_nuc": _od((120, 82, 160)),
    "bas_gran": _od((46, 30, 96)),
    "lym_cyto": _od((165, 196, 226)),
    "lym_nuc": _od((84, 54, 136)),
    "mon_cyto": _od((186, 190, 214)),
    "mon_nuc": _od((146, 108, 178)),
    "mon_vac": _od((230, 228, 238)),
}

# Diameter of each WBC type in units of D (cell radius = factor * D / 2).
_WBC_DIAM = {
    int(BloodClass.NEUTROPHIL): (1.6, 1.6),
    int(BloodClass.EOSINOPHIL): (1.7, 1.7),
    int(BloodClass.BASOPHIL): (1.4, 1.4),
    int(BloodClass.LYMPHOCYTE): (1.1, 1.3),
    int(BloodClass.MONOCYTE): (2.1, 2.1),
}
_RBC = (int(BloodClass.HEALTHY_RBC), int(BloodClass.INFECTED_RBC))
_PLT = (int(BloodClass.THROMBOCYTE), int(BloodClass.PLATELET_CLUMP))


# --------------------------------------------------------------------------- helpers
@lru_cache(maxsize=64)
def _noise_gain(sigma: float) -> float:
    """1 / std of unit white noise after scipy's gaussian_filter(sigma, truncate=3)."""
    r = int(3.0 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float(1.0 / (k**2).sum())


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Band-limited noise of unit standard deviation (float32)."""
    n = rng.standard_normal(shape, dtype=np.float32)
    if sigma >= 0.35:
        sigma = round(float(sigma), 2)
        n = ndimage.gaussian_filter(n, sigma, truncate=3.0) * np.float32(_noise_gain(sigma))
    return n


def _aa(sd: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in px (negative inside)."""
    return np.clip(0.5 - sd, 0.0, 1.0)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mix(od: np.ndarray, col: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Paint colour ``col`` (3,) or (h, w, 3) over ``od`` with coverage ``a`` (h, w)."""
    return od + (col - od) * a[..., None]


def _ellipse_sd(u: np.ndarray, v: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Approximate signed distance to an axis-aligned ellipse, and its normalised radius."""
    k = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    g = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    gk = np.where(k > 1e-6, g / np.maximum(k, 1e-6), 1.0 / math.sqrt(a * b))
    return (k - 1.0) / gk, k


def _star_sd(yy: np.ndarray, xx: np.ndarray, r: float, harm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radially perturbed circle: r(t) = r (1 + sum a_k cos(k t + p_k)); harm rows (k, a, p)."""
    rho = np.hypot(yy, xx)
    th = np.arctan2(yy, xx)
    rt = np.ones_like(rho)
    for k, a, p in harm:
        rt += a * np.cos(k * th + p)
    return rho - r * rt, rho, th


def _seg_dist(yy: np.ndarray, xx: np.ndarray, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    dy, dx = q[0] - p[0], q[1] - p[1]
    t = np.clip(((yy - p[0]) * dy + (xx - p[1]) * dx) / (dy * dy + dx * dx + 1e-9), 0.0, 1.0)
    return np.hypot(yy - (p[0] + t * dy), xx - (p[1] + t * dx))


def _harmonics(rng: np.random.Generator, amps: list[float]) -> np.ndarray:
    ks = np.arange(2, 2 + len(amps), dtype=np.float64)
    a = rng.uniform(-1.0, 1.0, len(amps)) * np.asarray(amps)
    p = rng.uniform(0, 2 * np.pi, len(amps))
    return np.stack([ks, a, p], axis=1)


def _granules(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    spacing: float,
    r_lo: float,
    r_hi: float,
    keep: float = 1.0,
) -> np.ndarray:
    """Coverage (h, w) of round granules: one jittered point per grid cell (cellular noise)."""
    spacing = max(spacing, 0.8)
    y0, x0 = float(yy[0, 0]), float(xx[0, 0])
    gy = ((yy - y0) / spacing).astype(np.intp)
    gx = ((xx - x0) / spacing).astype(np.intp)
    ny, nx = int(gy.max()) + 3, int(gx.max()) + 3
    iy, ix = np.mgrid[-1 : ny - 1, -1 : nx - 1]
    py = y0 + (iy + rng.uniform(0.05, 0.95, (ny, nx))) * spacing
    px = x0 + (ix + rng.uniform(0.05, 0.95, (ny, nx))) * spacing
    pr = rng.uniform(r_lo, r_hi, (ny, nx)) * (rng.uniform(size=(ny, nx)) < keep)
    sd = None
    for di in (0, 1, 2):
        for dj in (0, 1, 2):
            a, b = gy + di, gx + dj
            d = np.hypot(yy - py[a, b], xx - px[a, b]) - pr[a, b]
            sd = d if sd is None else np.minimum(sd, d)
    return _aa(sd)


def _largest_component(hard: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(hard, structure=np.ones((3, 3), bool))
    if n <= 1:
        return hard
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(None if rng is None else int(rng))
    raise ValueError(f"rng must be a numpy Generator, an int seed or None, not {type(rng).__name__}")


def _check_diameter(d: float) -> float:
    try:
        d = float(d)
    except (TypeError, ValueError):
        raise ValueError(f"rbc_diameter must be a number, got {d!r}") from None
    if not (MIN_DIAMETER <= d <= MAX_DIAMETER):
        raise ValueError(f"rbc_diameter must be in [{MIN_DIAMETER:g}, {MAX_DIAMETER:g}] px, got {d:g}")
    return d


# --------------------------------------------------------------------------- object specs
@dataclass
class _Spec:
    cls: int
    rb: float  # bounding radius: the hard mask lies strictly inside it
    R: float  # nominal radius
    p: dict
    center: tuple[float, float] = (0.0, 0.0)


def _rbc_spec(cls: int, R: float, e: float, th: float, pallor: float) -> _Spec:
    a, b = R * (1 + e), R * (1 - e)
    return _Spec(cls, a + 0.5, R, {"a": a, "b": b, "th": th, "pallor": pallor})


def _make_spec(cls: int, D: float, rng: np.random.Generator) -> _Spec:
    """Random geometry of one object of class ``cls`` (everything needed for placement)."""
    if cls in _RBC:
        R = D / 2 * (1 + float(np.clip(rng.normal(0, 0.035), -0.08, 0.08)))
        return _rbc_spec(cls, R, rng.uniform(0, 0.06), rng.uniform(0, np.pi), rng.uniform(0.3, 0.5))
    if cls == BloodClass.THROMBOCYTE:
        r = D * rng.uniform(0.125, 0.175)
        harm = _harmonics(rng, [0.07, 0.05, 0.03, 0.02, 0.015])
        return _Spec(cls, r * (1 + np.abs(harm[:, 1]).sum()) + 0.5, r, {"harm": harm})
    if cls == BloodClass.PLATELET_CLUMP:
        n = int(rng.integers(3, 16))
        plts: list[tuple[float, float, float, np.ndarray]] = []
        for i in range(n):
            r = D * rng.uniform(0.11, 0.16)
            harm = _harmonics(rng, [0.06, 0.04, 0.03, 0.02])
            if i == 0:
                cy = cx = 0.0
            else:
                j = int(rng.integers(0, len(plts)))
                ang = rng.uniform(0, 2 * np.pi)
                dist = rng.uniform(0.45, 0.65) * (r + plts[j][2])
                cy, cx = plts[j][0] + dist * math.sin(ang), plts[j][1] + dist * math.cos(ang)
            plts.append((cy, cx, r, harm))
        my = float(np.mean([q[0] for q in plts]))
        mx = float(np.mean([q[1] for q in plts]))
        plts = [(cy - my, cx - mx, r, h) for cy, cx, r, h in plts]
        rb = max(math.hypot(cy, cx) + r * (1 + np.abs(h[:, 1]).sum()) for cy, cx, r, h in plts) + 0.5
        return _Spec(cls, rb, rb - 0.5, {"plts": plts})
    if cls in _WBC_DIAM:
        lo, hi = _WBC_DIAM[cls]
        R = D / 2 * rng.uniform(lo, hi) * (1 + float(np.clip(rng.normal(0, 0.04), -0.08, 0.08)))
        harm = _harmonics(rng, [0.035, 0.022, 0.014, 0.01])
        return _Spec(cls, R * (1 + np.abs(harm[:, 1]).sum()) + 0.5, R, {"harm": harm})
    raise ValueError(f"cannot draw class {cls!r}; allowed: 1..9 ({', '.join(CLASS_NAMES[1:])})")


# --------------------------------------------------------------------------- drawing
_Sprite = tuple[np.ndarray, np.ndarray, np.ndarray]  # od (h, w, 3), alpha (h, w), hard (h, w)


def _draw_rbc(
    s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator, tex: np.ndarray | None = None
) -> _Sprite:
    p = s.p
    c, sn = math.cos(p["th"]), math.sin(p["th"])
    sd, k = _ellipse_sd(xx * c + yy * sn, -xx * sn + yy * c, p["a"], p["b"])
    prof = (
        1.0
        - p["pallor"] * _smoothstep(0.46, 0.08, k)
        + 0.10 * np.exp(-(((k - 0.74) / 0.16) ** 2))
        + 0.35 * np.exp(-(((k - 0.97) / 0.06) ** 2))
    )
    if tex is not None:
        prof *= 1.0 + 0.05 * tex
    tone = rng.normal(1.0, 0.06) * rng.normal(1.0, 0.03, 3).astype(np.float32)
    od = (_C["rbc"] * tone)[None, None, :] * prof[..., None]
    if s.cls == BloodClass.INFECTED_RBC:
        od = _draw_parasites(od, yy, xx, s.R, D, rng)
    return od, _aa(sd), sd < 0


def _draw_parasites(
    od: np.ndarray, yy: np.ndarray, xx: np.ndarray, R: float, D: float, rng: np.random.Generator
) -> np.ndarray:
    """1-3 P. falciparum ring forms: thin purple-blue ring with one or two chromatin dots."""
    n = int(rng.choice([1, 1, 1, 2, 2, 3]))
    hw0 = max(0.55, 0.022 * D)
    for _ in range(n):
        rp, ap = 0.36 * R * math.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        py, px = rp * math.sin(ap), rp * math.cos(ap)
        rr = 0.125 * D * rng.uniform(0.8, 1.15)
        t0 = rng.uniform(0, 2 * np.pi)
        dy, dx = yy - py, xx - px
        dist, ang = np.hypot(dy, dx), np.arctan2(dy, dx)
        hw = hw0 * (1.0 + 0.6 * np.cos(ang - t0))
        od = _mix(od, _C["ring"] * rng.normal(1.0, 0.06), 0.9 * _aa(np.abs(dist - rr) - hw))
        nd = int(rng.choice([1, 1, 2]))
        for j in range(nd):
            ta = t0 + np.pi + (0.0 if nd == 1 else (j - 0.5) * rng.uniform(0.7, 1.2))
            rd = max(0.8, 0.05 * D) * rng.uniform(0.9, 1.25)
            sd = np.hypot(yy - (py + rr * math.sin(ta)), xx - (px + rr * math.cos(ta))) - rd
            od = _mix(od, _C["dot"], _aa(sd))
    return od


def _platelet_colour(sd: np.ndarray, core: np.ndarray, D: float, rng: np.random.Generator) -> np.ndarray:
    g = _noise(rng, sd.shape, max(0.5, 0.03 * D))
    gran = np.clip((g - 0.1) * 1.2, 0.0, 1.0) * (0.35 + 0.65 * core)
    base = _C["plt"] * rng.normal(1.0, 0.07)
    od = base[None, None, :] * (0.8 + 0.45 * core)[..., None]
    return _mix(od, _C["plt_gran"], 0.85 * gran)


def _draw_thrombocyte(s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator) -> _Sprite:
    sd, rho, _ = _star_sd(yy, xx, s.R, s.p["harm"])
    core = np.exp(-((rho / (0.6 * s.R)) ** 2))
    return _platelet_colour(sd, core, D, rng), _aa(sd), sd < 0


def _draw_clump(s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator) -> _Sprite:
    sd = np.full(np.broadcast_shapes(yy.shape, xx.shape), np.inf, np.float32)
    core = np.zeros_like(sd)
    for cy, cx, r, harm in s.p["plts"]:
        sdi, rho, _ = _star_sd(yy - cy, xx - cx, r, harm)
        np.minimum(sd, sdi, out=sd)
        np.maximum(core, np.exp(-((rho / (0.6 * r)) ** 2)), out=core)
    return _platelet_colour(sd, core, D, rng), _aa(sd), sd < 0


def _cell_outline(s: _Spec, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    sd, _, _ = _star_sd(yy, xx, s.R, s.p["harm"])
    return sd


def _lobes_sd(
    yy: np.ndarray, xx: np.ndarray, lobes: list[tuple[float, float, float, float, float]], strand: float
) -> np.ndarray:
    """Union of elliptical lobes (cy, cx, a, b, th) joined in order by thin strands."""
    sd = None
    for cy, cx, a, b, th in lobes:
        c, sn = math.cos(th), math.sin(th)
        u, v = (xx - cx) * c + (yy - cy) * sn, -(xx - cx) * sn + (yy - cy) * c
        e, _ = _ellipse_sd(u, v, a, b)
        sd = e if sd is None else np.minimum(sd, e)
    for (y0, x0, *_), (y1, x1, *_) in zip(lobes[:-1], lobes[1:], strict=True):
        sd = np.minimum(sd, _seg_dist(yy, xx, (y0, x0), (y1, x1)) - strand)
    return sd


def _draw_neutrophil(s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator) -> _Sprite:
    R = s.R
    sd_c = _cell_outline(s, yy, xx)
    shape = sd_c.shape
    od = _C["neu_cyto"] * rng.normal(1.0, 0.08) * (1.0 + 0.12 * _noise(rng, shape, 0.6))[..., None]
    g = _noise(rng, shape, max(0.45, 0.018 * D))
    od = _mix(od, _C["neu_gran"], 0.7 * np.clip((g - 0.4) * 1.0, 0.0, 1.0))
    n = int(rng.integers(3, 6))
    arc_r = R * rng.uniform(0.34, 0.42)
    step = rng.uniform(0.95, 1.15) * (1.0 if n < 5 else 0.88)
    start = rng.uniform(0, 2 * np.pi)
    lobes = []
    for i in range(n):
        ang = start + i * step + rng.normal(0, 0.1)
        rad = arc_r * rng.uniform(0.85, 1.1)
        a = R * rng.uniform(0.2, 0.25)
        lobes.append((rad * math.sin(ang), rad * math.cos(ang), a, a * rng.uniform(0.7, 0.9), ang + rng.normal(0, 0.4)))
    sd_n = np.maximum(_lobes_sd(yy, xx, lobes, max(0.6, 0.045 * R)), sd_c + 0.08 * R)
    chrom = 1.0 + 0.2 * _noise(rng, shape, max(0.6, 0.035 * D))
    od = _mix(od, _C["neu_nuc"][None, None, :] * chrom[..., None], _aa(sd_n))
    return od, _aa(sd_c), sd_c < 0


def _draw_eosinophil(s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator) -> _Sprite:
    R = s.R
    sd_c = _cell_outline(s, yy, xx)
    shape = sd_c.shape
    od = np.broadcast_to(_C["eos_cyto"] * rng.normal(1.0, 0.08), shape + (3,))
    g = _granules(rng, yy, xx, 0.085 * D, 0.03 * D, 0.046 * D, keep=0.95)
    fine = 1.0 + 0.15 * _noise(rng, shape, 0.5)
    gran = _C["eos_gran"] * rng.normal(1.0, 0.08)
    od = _mix(od, gran[None, None, :] * fine[..., None], 0.95 * g)
    ax = rng.uniform(0, np.pi)
    sep = R * rng.uniform(0.27, 0.34)
    off = R * rng.uniform(0.0, 0.15)
    oy, ox = off * math.cos(ax), -off * math.sin(ax)  # shift perpendicular to the lobe axis
    lobes = []
    for sgn in (-1.0, 1.0):
        a = R * rng.uniform(0.27, 0.33)
        lobes.append(
            (
                oy + sgn * sep * math.sin(ax),
                ox + sgn * sep * math.cos(ax),
                a,
                a * rng.uniform(0.7, 0.9),
                ax + np.pi / 2 + rng.normal(0, 0.3),
            )
        )
    sd_n = np.maximum(_lobes_sd(yy, xx, lobes, max(0.6, 0.08 * R)), sd_c + 0.08 * R)
    chrom = 1.0 + 0.18 * _noise(rng, shape, max(0.6, 0.035 * D))
    od = _mix(od, _C["eos_nuc"][None, None, :] * chrom[..., None], _aa(sd_n))
    return od, _aa(sd_c), sd_c < 0


def _draw_basophil(s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator) -> _Sprite:
    R = s.R
    sd_c = _cell_outline(s, yy, xx)
    shape = sd_c.shape
    od = np.broadcast_to(_C["bas_cyto"] * rng.normal(1.0, 0.08), shape + (3,))
    lobes = []
    for _ in range(int(rng.integers(2, 4))):
        ang, rad = rng.uniform(0, 2 * np.pi), R * rng.uniform(0.05, 0.25)
        a = R * rng.uniform(0.3, 0.4)
        lobes.append((rad * math.sin(ang), rad * math.cos(ang), a, a * rng.uniform(0.7, 0.9), rng.uniform(0, np.pi)))
    sd_n = np.maximum(_lobes_sd(yy, xx, lobes, 0.1 * R), sd_c + 0.1 * R)
    od = _mix(od, _C["bas_nuc"], _aa(sd_n))
    g = _granules(rng, yy, xx, 0.11 * D, 0.03 * D, 0.065 * D, keep=0.9)
    fine = 1.0 + 0.2 * _noise(rng, shape, 0.5)
    gran = _C["bas_gran"] * rng.normal(1.0, 0.08)
    od = _mix(od, gran[None, None, :] * fine[..., None], 0.95 * g)
    return od, _aa(sd_c), sd_c < 0


def _draw_lymphocyte(s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator) -> _Sprite:
    R = s.R
    sd_c = _cell_outline(s, yy, xx)
    shape = sd_c.shape
    rho = np.hypot(yy, xx)
    cyto = _C["lym_cyto"] * rng.normal(1.0, 0.1)
    od = cyto[None, None, :] * (1.0 + 0.35 * (rho / R) + 0.08 * _noise(rng, shape, 0.7))[..., None]
    ang = rng.uniform(0, 2 * np.pi)
    off = R * rng.uniform(0.04, 0.14)
    a = R * rng.uniform(0.78, 0.86)
    lobes = [(off * math.sin(ang), off * math.cos(ang), a, a * rng.uniform(0.88, 1.0), rng.uniform(0, np.pi))]
    sd_n = np.maximum(_lobes_sd(yy, xx, lobes, 0.0), sd_c + max(1.2, 0.1 * R))
    chrom = 1.0 + 0.22 * _noise(rng, shape, max(0.6, 0.045 * D))
    nuc = _C["lym_nuc"] * rng.normal(1.0, 0.06)
    od = _mix(od, nuc[None, None, :] * chrom[..., None], _aa(sd_n))
    return od, _aa(sd_c), sd_c < 0


def _draw_monocyte(s: _Spec, yy: np.ndarray, xx: np.ndarray, D: float, rng: np.random.Generator) -> _Sprite:
    R = s.R
    sd_c = _cell_outline(s, yy, xx)
    shape = sd_c.shape
    cyto = _C["mon_cyto"] * rng.normal(1.0, 0.08)
    od = cyto[None, None, :] * (1.0 + 0.12 * _noise(rng, shape, 0.6))[..., None]
    for _ in range(int(rng.integers(0, 5))):
        ang, rad = rng.uniform(0, 2 * np.pi), R * rng.uniform(0.55, 0.8)
        sd_v = np.hypot(yy - rad * math.sin(ang), xx - rad * math.cos(ang)) - R * rng.uniform(0.04, 0.08)
        od = _mix(od, _C["mon_vac"], 0.8 * _aa(sd_v))
    # kidney / horseshoe nucleus: a thick arc around an offset centre with rounded ends
    mid = rng.uniform(0, 2 * np.pi)  # direction of the arc's middle
    off = R * rng.uniform(0.05, 0.14)
    oy, ox = -off * math.sin(mid), -off * math.cos(mid)
    ra = R * rng.uniform(0.36, 0.44)
    half = math.radians(rng.uniform(65, 120))
    w = R * rng.uniform(0.22, 0.29)
    dy, dx = yy - oy, xx - ox
    rel = np.angle(np.exp(1j * (np.arctan2(dy, dx) - mid)))
    e1 = (oy + ra * math.sin(mid - half), ox + ra * math.cos(mid - half))
    e2 = (oy + ra * math.sin(mid + half), ox + ra * math.cos(mid + half))
    d_end = np.minimum(np.hypot(yy - e1[0], xx - e1[1]), np.hypot(yy - e2[0], xx - e2[1]))
    d = np.where(np.abs(rel) <= half, np.abs(np.hypot(dy, dx) - ra), d_end)
    sd_n = np.maximum(d - w, sd_c + 0.07 * R)
    chrom = 1.0 + 0.25 * _noise(rng, shape, max(0.5, 0.025 * D))
    nuc = _C["mon_nuc"] * rng.normal(1.0, 0.06)
    od = _mix(od, nuc[None, None, :] * chrom[..., None], _aa(sd_n))
    return od, _aa(sd_c), sd_c < 0


_DRAW = {
    int(BloodClass.HEALTHY_RBC): _draw_rbc,
    int(BloodClass.INFECTED_RBC): _draw_rbc,
    int(BloodClass.THROMBOCYTE): _draw_thrombocyte,
    int(BloodClass.PLATELET_CLUMP): _draw_clump,
    int(BloodClass.NEUTROPHIL): _draw_neutrophil,
    int(BloodClass.EOSINOPHIL): _draw_eosinophil,
    int(BloodClass.BASOPHIL): _draw_basophil,
    int(BloodClass.LYMPHOCYTE): _draw_lymphocyte,
    int(BloodClass.MONOCYTE): _draw_monocyte,
}


def _draw_sprite(
    s: _Spec, r0: int, r1: int, c0: int, c1: int, D: float, rng: np.random.Generator, tex: np.ndarray | None = None
) -> _Sprite:
    """Draw ``s`` on the image box [r0:r1, c0:c1]; the hard mask is one 8-connected blob."""
    yy = (np.arange(r0, r1, dtype=np.float32) - np.float32(s.center[0]))[:, None]
    xx = (np.arange(c0, c1, dtype=np.float32) - np.float32(s.center[1]))[None, :]
    if s.cls in _RBC:  # convex: always one blob
        return _draw_rbc(s, yy, xx, D, rng, None if tex is None else tex[r0:r1, c0:c1])
    od, alpha, hard = _DRAW[s.cls](s, yy, xx, D, rng)
    kept = _largest_component(hard)
    if kept is not hard:
        alpha = np.where(hard & ~kept, 0.0, alpha)
    return np.asarray(od, np.float32), np.asarray(alpha, np.float32), kept


# --------------------------------------------------------------------------- image formation
class _Canvas:
    def __init__(self, shape: tuple[int, int], D: float, rng: np.random.Generator):
        self.H, self.W = shape
        self.od = np.zeros((self.H, self.W, 3), np.float32)
        self.mask = np.zeros(shape, np.uint8)
        self.inst = np.zeros(shape, np.int32)
        # one smooth unit-std texture field (cytoplasm mottling of RBCs), made at reduced resolution
        step = max(1, int(round(0.05 * D)))
        small = _noise(rng, (self.H // step + 2, self.W // step + 2), 0.08 * D / step)
        if step > 1:
            small = ndimage.zoom(small, step, order=1, grid_mode=True, mode="nearest")
        self.tex = small[: self.H, : self.W]

    def box(self, s: _Spec) -> tuple[int, int, int, int]:
        cy, cx = s.center
        m = s.rb + 1.0
        r0, r1 = max(0, math.floor(cy - m)), min(self.H, math.ceil(cy + m) + 1)
        c0, c1 = max(0, math.floor(cx - m)), min(self.W, math.ceil(cx + m) + 1)
        return r0, r1, c0, c1

    def draw(self, s: _Spec, iid: int, D: float, rng: np.random.Generator) -> None:
        r0, r1, c0, c1 = self.box(s)
        if r1 <= r0 or c1 <= c0:
            return
        od, alpha, hard = _draw_sprite(s, r0, r1, c0, c1, D, rng, self.tex)
        a = alpha[..., None]
        tgt = self.od[r0:r1, c0:c1]
        if s.cls in _RBC:  # RBCs are translucent: overlaps add up
            tgt += a * od
        else:  # platelets and WBCs lie on top
            tgt += a * (od - tgt)
        self.mask[r0:r1, c0:c1][hard] = s.cls
        self.inst[r0:r1, c0:c1][hard] = iid


def _finish_image(od: np.ndarray, D: float, rng: np.random.Generator, *, vignette: bool = True) -> np.ndarray:
    """Objects' OD -> uint8 RGB: stain variation, background, illumination, blur, noise."""
    H, W = od.shape[:2]
    stain = (rng.normal(1.0, 0.05) * rng.normal(1.0, 0.03, 3)).astype(np.float32)
    bg = (np.log(255.0 / _BG_RGB) * rng.normal(1.0, 0.12, 3)).astype(np.float32)
    total = od * stain + bg
    # smooth background mottling (plasma / stain unevenness) from a few low-frequency waves
    y = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, W, dtype=np.float32)[None, :]
    mottle = np.zeros((H, W), np.float32)
    for _ in range(4):
        fy, fx = rng.uniform(0.5, 3.0) * H / 512, rng.uniform(0.5, 3.0) * W / 512
        mottle += np.cos(2 * np.pi * fy * y + rng.uniform(0, 6.3)) * np.cos(2 * np.pi * fx * x + rng.uniform(0, 6.3))
    total += (0.012 * mottle)[..., None]
    light = np.float32(255.0) * np.exp(-total)
    if vignette:
        cy, cx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        illum = 1.0 - rng.uniform(0.02, 0.06) * ((y - cy) ** 2 + (x - cx) ** 2) * 2.0
        light *= (illum * np.float32(rng.uniform(0.98, 1.02)))[..., None]
    sigma = 0.45 + 0.25 * D / 36.0
    light = ndimage.gaussian_filter(light, (sigma, sigma, 0), truncate=3.0)
    light += rng.standard_normal(light.shape, dtype=np.float32) * np.float32(rng.uniform(1.2, 2.5))
    return np.clip(np.rint(light), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- placement
def _default_counts(shape: tuple[int, int], D: float) -> dict[int, int]:
    s = shape[0] * shape[1] / 512**2 * (36.0 / D) ** 2
    n = int(math.floor(s + 0.5))
    counts = {int(c): n for c in WBC_CLASSES}
    counts[int(BloodClass.THROMBOCYTE)] = int(math.floor(4 * s + 0.5))
    counts[int(BloodClass.PLATELET_CLUMP)] = n
    return counts


def _check_counts(counts: dict) -> dict[int, int]:
    if not isinstance(counts, dict):
        raise ValueError(f"counts must be a dict {{class: number}}, got {type(counts).__name__}")
    out: dict[int, int] = {}
    for k, v in counts.items():
        c = class_id(k)
        if c in _RBC or c == BloodClass.BACKGROUND:
            raise ValueError(
                f"counts may only name WBC, thrombocyte and platelet clump classes, not {CLASS_NAMES[c]!r} "
                "(RBCs are set by rbc_density and infected_fraction)"
            )
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"counts[{CLASS_NAMES[c]!r}] must be a non-negative int, got {v!r}")
        out[c] = out.get(c, 0) + int(v)
    return out


def _place_required(
    specs: list[_Spec], shape: tuple[int, int], D: float, rng: np.random.Generator, strict: bool
) -> list[_Spec]:
    """Place WBCs and platelets fully inside the image, never touching each other."""
    H, W = shape
    cen = np.zeros((len(specs), 2))
    rbs = np.zeros(len(specs))
    placed: list[_Spec] = []
    for s in sorted(specs, key=lambda q: -q.rb):
        lo = s.rb + 1.0
        if 2 * lo > min(H, W) - 1:
            if strict:
                raise ValueError(
                    f"a {CLASS_NAMES[s.cls]} ({2 * s.rb:.0f} px across) does not fit in a {H}x{W} image; "
                    "use a larger shape or a smaller rbc_diameter"
                )
            continue
        n = len(placed)
        ok = None
        for attempt in range(24):
            m = 32 if attempt < 2 else 512
            c = np.stack([rng.uniform(lo, H - 1 - lo, m), rng.uniform(lo, W - 1 - lo, m)], axis=1)
            if n:
                d2 = (c[:, None, 0] - cen[None, :n, 0]) ** 2 + (c[:, None, 1] - cen[None, :n, 1]) ** 2
                good = np.all(d2 >= (s.rb + rbs[None, :n] + _GAP) ** 2, axis=1)
            else:
                good = np.ones(m, bool)
            if good.any():
                ok = c[int(np.argmax(good))]
                break
        if ok is None:
            if strict:
                n_req = sum(1 for q in specs if q.cls == s.cls)
                raise ValueError(
                    f"cannot fit the requested objects ({n_req} x {CLASS_NAMES[s.cls]} among {len(specs)} "
                    f"WBCs/platelets) without overlap in a {H}x{W} image at rbc_diameter "
                    f"{D:g} px; lower counts or use a larger shape"
                )
            continue
        s.center = (float(ok[0]), float(ok[1]))
        cen[n] = ok
        rbs[n] = s.rb
        placed.append(s)
    return placed


def _fill_rbcs(
    others: list[_Spec], shape: tuple[int, int], D: float, density: float, touching: bool, rng: np.random.Generator
) -> list[_Spec]:
    """Random sequential addition of RBCs until the visible RBC area reaches ``density``."""
    H, W = shape
    target = density * H * W
    if target <= 0:
        return []
    ocen = np.array([s.center for s in others], float).reshape(-1, 2)
    orb = np.array([s.rb for s in others], float)
    otree = cKDTree(ocen) if len(others) else None
    R0 = D / 2
    area_one = math.pi * R0 * R0
    expect = target / area_one
    budget = int(60 * expect + 4000)
    cen = np.zeros((0, 2))
    Rs = np.zeros(0)
    rbs = np.zeros(0)
    accepted: list[_Spec] = []
    area = 0.0
    tried = 0
    rb_max = R0 * 1.08 * 1.06 + 0.5
    o_max = float(orb.max()) if len(orb) else 0.0
    while area < target and tried < budget:
        m = int(np.clip((target - area) / area_one * 2.0 + 64, 64, 4096))
        tried += m
        R = R0 * (1 + np.clip(rng.normal(0, 0.035, m), -0.08, 0.08))
        e = rng.uniform(0, 0.06, m)
        th = rng.uniform(0, np.pi, m)
        pallor = rng.uniform(0.3, 0.5, m)
        rb = R * (1 + e) + 0.5
        # centres inside the image: an RBC cut by the border keeps >= 1/4 of its area (still countable)
        c = np.stack([rng.uniform(0, H - 1, m), rng.uniform(0, W - 1, m)], axis=1)
        bad = np.zeros(m, bool)
        # against WBCs / platelets
        if otree is not None:
            ct = cKDTree(c)
            pairs = ct.sparse_distance_matrix(otree, rb_max + o_max + _GAP, output_type="ndarray")
            if len(pairs):
                i, j, dd = pairs["i"], pairs["j"], pairs["v"]
                need = rb[i] + orb[j] + _GAP if not touching else orb[j] + 0.6 * R[i]
                bad[i[dd < need]] = True
        # against RBCs already accepted
        if len(cen):
            ct = cKDTree(c)
            pairs = ct.sparse_distance_matrix(cKDTree(cen), 2 * rb_max + _GAP, output_type="ndarray")
            if len(pairs):
                i, j, dd = pairs["i"], pairs["j"], pairs["v"]
                need = rb[i] + rbs[j] + _GAP if not touching else 0.88 * (R[i] + Rs[j])
                bad[i[dd < need]] = True
        idx = np.flatnonzero(~bad)
        if not len(idx):
            continue
        # greedy among this batch's survivors, in order
        sub = cKDTree(c[idx])
        pairs = sub.query_pairs(2 * rb_max + _GAP, output_type="ndarray")
        conflicts: dict[int, list[int]] = {}
        if len(pairs):
            a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
            dd = np.hypot(*(c[a] - c[b]).T)
            need = rb[a] + rb[b] + _GAP if not touching else 0.88 * (R[a] + R[b])
            for p, q in zip(a[dd < need].tolist(), b[dd < need].tolist(), strict=True):
                lo, hi = (p, q) if p < q else (q, p)
                conflicts.setdefault(hi, []).append(lo)
        taken = np.zeros(m, bool)
        vis = _visible_fraction(c, R, H, W)
        new = []
        for k in idx.tolist():
            if area >= target:
                break
            if any(taken[q] for q in conflicts.get(k, ())):
                continue
            taken[k] = True
            new.append(k)
            area += math.pi * R[k] * R[k] * (1 - e[k] ** 2) ** 0.5 * vis[k]
        if new:
            nk = np.array(new)
            cen = np.vstack([cen, c[nk]])
            Rs = np.concatenate([Rs, R[nk]])
            rbs = np.concatenate([rbs, rb[nk]])
            for k in new:
                s = _rbc_spec(int(BloodClass.HEALTHY_RBC), float(R[k]), float(e[k]), float(th[k]), float(pallor[k]))
                s.center = (float(c[k, 0]), float(c[k, 1]))
                accepted.append(s)
    return accepted


def _visible_fraction(c: np.ndarray, R: np.ndarray, H: int, W: int) -> np.ndarray:
    fy = (np.minimum(c[:, 0] + R, H - 0.5) - np.maximum(c[:, 0] - R, -0.5)) / (2 * R)
    fx = (np.minimum(c[:, 1] + R, W - 0.5) - np.maximum(c[:, 1] - R, -0.5)) / (2 * R)
    return np.clip(fy, 0, 1) * np.clip(fx, 0, 1)


def _choose_infected(
    rbcs: list[_Spec], others: list[_Spec], shape: tuple[int, int], fraction: float, rng: np.random.Generator
) -> None:
    """Mark round(fraction * n) RBCs infected, among those fully inside and not under a WBC/platelet."""
    n = int(math.floor(fraction * len(rbcs) + 0.5))
    if n <= 0:
        return
    H, W = shape
    c = np.array([s.center for s in rbcs], float)
    rb = np.array([s.rb for s in rbcs], float)
    inside = (c[:, 0] >= rb) & (c[:, 0] <= H - 1 - rb) & (c[:, 1] >= rb) & (c[:, 1] <= W - 1 - rb)
    if others:
        oc = np.array([o.center for o in others], float)
        orb = np.array([o.rb for o in others], float)
        pairs = cKDTree(c).sparse_distance_matrix(cKDTree(oc), float(rb.max() + orb.max()), output_type="ndarray")
        if len(pairs):
            i, j = pairs["i"], pairs["j"]
            inside[i[pairs["v"] < rb[i] + orb[j]]] = False
    ok = np.flatnonzero(inside).tolist()
    if not ok:
        return
    for k in rng.permutation(ok)[:n].tolist():
        rbcs[k].cls = int(BloodClass.INFECTED_RBC)


# --------------------------------------------------------------------------- public API
def render_cell(cls: int, rbc_diameter: float = 36.0, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One cell sprite: (h, w, 4) uint8 RGBA, alpha 255 inside the cell, 0 outside; tight crop
    with a 3 px margin. ``cls`` is any cell class 1..9 (or its name); RGB outside is plain background."""
    D = _check_diameter(rbc_diameter)
    c = class_id(cls)
    if c == BloodClass.BACKGROUND:
        raise ValueError("render_cell needs a cell class (1..9), not background")
    g = _as_rng(rng)
    s = _make_spec(c, D, g)
    half = math.ceil(s.rb) + 6
    n = 2 * half + 1
    s.center = (float(half), float(half))
    canvas = _Canvas((n, n), D, g)
    canvas.draw(s, 1, D, g)
    rgb = _finish_image(canvas.od, D, g, vignette=False)
    alpha = np.where(canvas.mask > 0, 255, 0).astype(np.uint8)
    m = 3  # margin around the mask's bounding box
    sl = ndimage.find_objects(canvas.inst)[0]
    crop = (slice(sl[0].start - m, sl[0].stop + m), slice(sl[1].start - m, sl[1].stop + m))
    return np.ascontiguousarray(np.dstack([rgb, alpha])[crop])


def render_smear(
    shape: tuple[int, int] = (512, 512),
    *,
    rbc_diameter: float = 36.0,
    seed: int | None = 0,
    counts: dict[int, int] | None = None,
    rbc_density: float = 0.45,
    infected_fraction: float = 0.1,
    touching: bool = True,
) -> RenderedSmear:
    """Render a synthetic smear field with exact class mask and instance map.

    counts: exact number of each non-RBC class to place (keys: class ids or names; classes not named
    get none). Default: one of each of the five WBC types, ~4 thrombocytes and 1 platelet clump per
    512x512 field at D = 36 px, scaled to the area (objects that cannot fit are then left out).
    Requested objects always lie wholly inside the image; RBCs may be cut by the border (their
    centres stay inside, so each keeps at least about a quarter of its area).
    RBCs fill to ``rbc_density`` visible area fraction (fewer if they cannot fit), and
    round(infected_fraction * n_RBC) of them are infected (capped by RBCs that are wholly inside).
    touching=False: no two objects overlap or touch (>= 2 px gap), so every cell is a separate
    connected component; touching=True: RBCs may overlap slightly and WBCs/platelets sit on top.
    Same arguments and seed give byte-identical output; ``seed=None`` is random.
    Raises ValueError for bad arguments or requested counts that cannot fit.
    """
    try:
        H, W = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if H < MIN_SIZE or W < MIN_SIZE:
        raise ValueError(f"shape must be at least {MIN_SIZE}x{MIN_SIZE}, got {H}x{W}")
    D = _check_diameter(rbc_diameter)
    if not (isinstance(rbc_density, numbers.Real) and 0.0 <= rbc_density <= 0.85):
        raise ValueError(f"rbc_density must be in [0, 0.85], got {rbc_density!r}")
    if not (isinstance(infected_fraction, numbers.Real) and 0.0 <= infected_fraction <= 1.0):
        raise ValueError(f"infected_fraction must be in [0, 1], got {infected_fraction!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    strict = counts is not None
    want = _check_counts(counts) if strict else _default_counts((H, W), D)
    rng = np.random.default_rng(seed)

    specs = [_make_spec(c, D, rng) for c in sorted(want) for _ in range(want[c])]
    others = _place_required(specs, (H, W), D, rng, strict)
    rbcs = _fill_rbcs(others, (H, W), D, float(rbc_density), bool(touching), rng)
    _choose_infected(rbcs, others if touching else [], (H, W), float(infected_fraction), rng)

    # draw order: healthy RBCs, infected RBCs (their parasites stay theirs), platelets, WBCs
    order = [s for s in rbcs if s.cls == BloodClass.HEALTHY_RBC] + [s for s in rbcs if s.cls == BloodClass.INFECTED_RBC]
    order += [s for s in others if s.cls in _PLT] + [s for s in others if s.cls not in _PLT]
    canvas = _Canvas((H, W), D, rng)
    for iid, s in enumerate(order, start=1):
        canvas.draw(s, iid, D, rng)
    image = _finish_image(canvas.od, D, rng)

    # drop invisible objects and renumber 1..n in draw order
    present = np.zeros(len(order) + 1, bool)
    present[np.unique(canvas.inst)] = True
    present[0] = False
    lut = np.zeros(len(order) + 1, np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    inst = lut[canvas.inst]
    old_ids = np.flatnonzero(present)
    cells: list[Cell] = []
    for new_id, sl in enumerate(ndimage.find_objects(inst), start=1):
        s = order[int(old_ids[new_id - 1]) - 1]
        bbox = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
        cells.append(Cell(id=new_id, cls=int(s.cls), center=(float(s.center[0]), float(s.center[1])), bbox=bbox))
    return RenderedSmear(image=image, mask=canvas.mask, instances=inst, cells=cells)


def sample_smear(seed: int = 0) -> RenderedSmear:
    """The fixed 512x512 sample used by napari's Open Sample: all nine cell classes visible, deterministic."""
    counts = {int(c): 1 for c in WBC_CLASSES}
    counts[int(BloodClass.THROMBOCYTE)] = 4
    counts[int(BloodClass.PLATELET_CLUMP)] = 1
    return render_smear(
        (512, 512), rbc_diameter=36.0, seed=seed, counts=counts, rbc_density=0.45, infected_fraction=0.1, touching=True
    )
