"""Training augmentation: geometry (flips, turns, zoom) and the look of other labs and cameras.

Composited and rendered tiles all come from a few sources; real smears differ in stain, glass,
camera and optics. ``appearance`` draws those differences wide: stain strength and hue in
optical-density space, tinted and textured backgrounds (plasma, debris), colour casts and low
contrast of cheap cameras, vignetting and uneven light, grey and pale cells, defocus, noise and
JPEG artefacts. Masks follow the geometry only.
"""

from __future__ import annotations

import io
from enum import Enum

import numpy as np
from scipy import ndimage as ndi

from .classes import IGNORE_INDEX

WIDE_STRENGTH = (0.6, 1.5)  # range of the wide appearance strength, drawn per training view
LOW_RES_CAMERA_P = 0.25  # share of wide views recorded by a lower-resolution camera (low_res_camera)
LOW_RES_FACTOR = (0.35, 0.9)  # its pixels per RBC against the training scale's


class AugmentLevel(str, Enum):
    NONE = "none"  # no augmentation
    MILD = "mild"  # flips, turns, a mild colour jitter (the reference recipe)
    WIDE = "wide"  # + zoom and the wide appearance randomisation for unseen labs and cameras


def augment_level(level: str | AugmentLevel) -> AugmentLevel:
    try:
        return AugmentLevel(str(getattr(level, "value", level)).lower())
    except ValueError:
        raise ValueError(f"unknown augmentation {level!r}; allowed: {', '.join(a.value for a in AugmentLevel)}") from None


def geometry(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random flip/90° turn of both."""
    k = int(rng.integers(4))
    img, mask = np.rot90(img, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    return img, mask


def zoom(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, lo: float = 0.75, hi: float = 1.35,
         ) -> tuple[np.ndarray, np.ndarray]:
    """Rescale by a factor in [lo, hi] (log-uniform) keeping the size: zooming in crops the centre
    region, zooming out pads with mirrored image and ignored mask. Teaches tolerance to a scale
    estimate that is off by up to a third."""
    from .infer import _resize_uint8

    f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if abs(f - 1) < 0.03:
        return img, mask
    h, w = mask.shape
    nh, nw = max(8, round(h * f)), max(8, round(w * f))
    im, mk = _resize_uint8(img, nh, nw, smooth=True), _resize_uint8(mask, nh, nw, smooth=False)
    if f > 1:
        y, x = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
        return im[y : y + h, x : x + w], mk[y : y + h, x : x + w]
    py, px = h - nh, w - nw
    t, left = int(rng.integers(0, py + 1)), int(rng.integers(0, px + 1))
    pad = ((t, py - t), (left, px - left))
    return (np.pad(im, pad + ((0, 0),), mode="reflect"),
            np.pad(mk, pad, constant_values=IGNORE_INDEX))


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise field (drawn small, blurred, upsampled)."""
    h, w = shape
    k = max(1.0, sigma / 4)
    sh, sw = max(2, int(h / k)), max(2, int(w / k))
    small = ndi.gaussian_filter(rng.standard_normal((sh, sw)).astype(np.float32), sigma / k)
    field = ndi.zoom(small, (h / sh, w / sw), order=1)[:h, :w]
    if field.shape != (h, w):
        field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1])), mode="edge")
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def appearance(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """The wide appearance randomisation; ``mask`` (0 = glass) places background-only effects."""
    h, w = mask.shape
    x = img.astype(np.float32) / 255.0
    s = strength
    # 1. stain: optical density per channel scaled (stain strength, hue shift between channels)
    if rng.random() < 0.8:
        od = -np.log(np.clip(x, 1 / 255, 1))
        gain = rng.uniform(1 - 0.35 * s, 1 + 0.35 * s, 3) * rng.uniform(1 - 0.3 * s, 1 + 0.25 * s)
        x = np.exp(-od * gain.astype(np.float32))
    # 2. grey or pale cells: desaturate toward luminance
    if rng.random() < 0.25:
        lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
        a = min(1.0, rng.uniform(0.2, 0.8) * s)
        x = x * (1 - a) + lum[..., None] * a
    # 3. background (glass/plasma): tint and texture where the mask says glass, soft-edged
    glass = mask == 0
    unknown = mask == IGNORE_INDEX
    if glass.any() and unknown.any():  # unlabelled parts of real fields: glass by its brightness
        lum = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        glass = glass | (unknown & (lum >= np.percentile(lum[glass], 10)))
    glass = glass.astype(np.float32)
    if glass.any() and rng.random() < 0.6:
        soft = ndi.gaussian_filter(glass, 1.5)[..., None]
        tint = rng.uniform(-0.18, 0.08, 3).astype(np.float32) * s
        tex = _smooth_noise((h, w), rng, rng.uniform(3, 25))[..., None] * rng.uniform(0, 0.06) * s
        x = x + soft * (tint + tex)
        if rng.random() < 0.3:  # debris / plasma specks
            n = int(rng.integers(3, 40))
            spots = np.zeros((h, w), np.float32)
            spots[rng.integers(0, h, n), rng.integers(0, w, n)] = 1
            spots = ndi.gaussian_filter(spots, rng.uniform(0.7, 2.0))
            spots /= max(float(spots.max()), 1e-6)
            x = x - soft * spots[..., None] * rng.uniform(0.05, 0.3) * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    # 4. camera: white balance / colour cast, contrast, gamma
    if rng.random() < 0.8:
        x = x * rng.uniform(1 - 0.25 * s, 1 + 0.15 * s, 3).astype(np.float32)
    if rng.random() < 0.5:
        c = rng.uniform(1 - 0.45 * s, 1.15)
        m = x.mean((0, 1), keepdims=True)
        x = (x - m) * c + m + rng.uniform(-0.08, 0.08) * s
    if rng.random() < 0.4:
        x = np.clip(x, 0, 1) ** rng.uniform(0.7, 1.4)
    # 5. light: vignetting and a tilted illumination field
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = rng.uniform(-0.5, 1.5) * h, rng.uniform(-0.5, 1.5) * w
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / float(max(h, w) ** 2)
        x = x * (1 - rng.uniform(0, 0.35) * s * np.clip(r2, 0, 2)[..., None])
    if rng.random() < 0.3:
        x = x * (1 + 0.2 * s * _smooth_noise((h, w), rng, 60)[..., None] * rng.uniform(0.2, 1))
    # 6. optics and sensor: defocus, noise, JPEG
    if rng.random() < 0.35:
        sig = rng.uniform(0.4, 1.8 * s)
        x = ndi.gaussian_filter(x, (sig, sig, 0))
    if rng.random() < 0.4:
        x = x + rng.standard_normal(x.shape).astype(np.float32) * rng.uniform(0.005, 0.03) * s
    out = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < LOW_RES_CAMERA_P:
        return low_res_camera(out, rng, float(rng.uniform(*LOW_RES_FACTOR)), s)
    if rng.random() < 0.3:
        out = _jpeg(out, int(rng.integers(25, 90)))
    return out


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (uint8 RGB) after a JPEG round trip at ``quality``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def low_res_camera(img: np.ndarray, rng: np.random.Generator, factor: float, strength: float = 1.0) -> np.ndarray:
    """``img`` (uint8, at the training scale) as a camera with ``factor`` times fewer pixels per RBC
    records it and the segmenter scales it back up: sensor noise and JPEG blocks at the camera's
    resolution, so magnified (a field with 13 px RBCs is enlarged 2.8x)."""
    from PIL import Image

    h, w = img.shape[:2]
    sw, sh = max(8, round(w * factor)), max(8, round(h * factor))
    small = np.asarray(Image.fromarray(img).resize((sw, sh), Image.Resampling.BILINEAR), np.float32)
    small = small + rng.standard_normal(small.shape).astype(np.float32) * rng.uniform(1, 6) * strength
    small = _jpeg((np.clip(small, 0, 255) + 0.5).astype(np.uint8), int(rng.integers(25, 80)))
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


# A phone photographing through the eyepiece, as the benchmark's --camera phone applies it to a
# real field at its own resolution: light falling to 55 % in the corners, a warm cast, sensor noise
# of 4 grey levels and JPEG at quality 40 (the shipped model at automatic scale, another 8 held-out
# fields each: wbc_rpi false WBCs per field 0.12 -> 3.75, pig_wbc 0.38 -> 1.0; model card, session 30).
PHONE_CORNER_LIGHT = 0.55
PHONE_CAST = (1.05, 0.97, 0.85)  # R, G, B gains
PHONE_NOISE = 4.0  # grey levels (std)
PHONE_JPEG_QUALITY = 40


def cheap_camera(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` (uint8, H x W x 3) as a cheap camera through the eyepiece would record it, at the
    image's own resolution: radial light fall-off, a warm cast, noise, strong JPEG. Only the noise
    is drawn from ``rng``: the same seed gives the same picture."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r2 = (np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) / (np.hypot(h - 1, w - 1) / 2 or 1)) ** 2  # 1 in the corners
    x = rgb.astype(np.float32) * (1 - (1 - PHONE_CORNER_LIGHT) * r2)[..., None].astype(np.float32)
    x *= np.array(PHONE_CAST, np.float32)
    x += rng.standard_normal(x.shape).astype(np.float32) * PHONE_NOISE
    return _jpeg((np.clip(x, 0, 255) + 0.5).astype(np.uint8), PHONE_JPEG_QUALITY)


def mild_colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The reference recipe's colour jitter: per-channel gain ±10 %, offset ±12 levels."""
    gain = rng.uniform(0.9, 1.1, 3)
    bias = rng.uniform(-12, 12, 3)
    return np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def augment_pair(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 level: str | AugmentLevel = AugmentLevel.MILD) -> tuple[np.ndarray, np.ndarray]:
    """One training view of an (image, class mask) pair."""
    lv = augment_level(level)
    if lv is AugmentLevel.NONE:
        return img, mask
    img, mask = geometry(img, mask, rng)
    if lv is AugmentLevel.WIDE:
        if rng.random() < 0.5:
            img, mask = zoom(img, mask, rng)
        if rng.random() < 0.85:  # strength drawn per view: from near-standard smears to phone-camera casts
            img = appearance(np.ascontiguousarray(img), np.ascontiguousarray(mask), rng,
                             strength=float(rng.uniform(*WIDE_STRENGTH)))
        else:
            img = mild_colour(img, rng)
    else:
        img = mild_colour(img, rng)
    return np.ascontiguousarray(img), np.ascontiguousarray(mask)
