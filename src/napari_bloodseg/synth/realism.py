"""Per-image realism: stain and white-balance jitter, illumination gradient, blur and sensor noise."""

from __future__ import annotations

import math

import numpy as np

from .config import SynthConfig

_NOISE: dict[int, np.ndarray] = {}


def _noise_texture(T: int) -> np.ndarray:
    """A fixed unit-variance Gaussian noise texture (3 x 2T x 2T, planar); each image takes a random
    window of it, turned/flipped (drawing fresh noise per image costs more than the rest of the finishing)."""
    tex = _NOISE.get(T)
    if tex is None:
        tex = _NOISE[T] = np.random.default_rng(20240607).standard_normal((3, 2 * T, 2 * T), dtype=np.float32)
    return tex


def _finish(img: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Per-image realism: stain/colour jitter (LUT), illumination gradient, blur, noise.
    Works on channel planes (3, T, T): several times faster than interleaved RGB here."""
    T = img.shape[0]
    g = rng.uniform(1 - cfg.stain_jitter, 1 + cfg.stain_jitter, 3) if cfg.stain_jitter > 0 else np.ones(3)
    wb = rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter, 3) if cfg.color_jitter > 0 else np.ones(3)
    amp = float(rng.uniform(0, cfg.illumination)) if cfg.illumination > 0 else 0.0
    theta = float(rng.uniform(0, 2 * np.pi))
    sigma = float(rng.uniform(*cfg.blur)) if cfg.blur[1] > 0 else 0.0
    noise = float(rng.uniform(*cfg.noise)) if cfg.noise[1] > 0 else 0.0
    # optical density gain per channel: I' = 255 (I / 255) ** g, then white balance
    x = np.arange(256, dtype=np.float64) / 255.0
    lut = (255.0 * np.power(np.maximum(x, 1 / 510)[None, :], g[:, None]) * wb[:, None]).astype(np.float32)
    out = np.empty((3, T, T), np.float32)
    for ch in range(3):
        np.take(lut[ch], img[..., ch], out=out[ch])
    if amp > 0:
        t = np.linspace(-0.5, 0.5, T, dtype=np.float32)
        out *= 1.0 + amp * (math.sin(theta) * t[:, None] + math.cos(theta) * t[None, :])
    if sigma >= 0.3:
        from scipy import ndimage

        ndimage.gaussian_filter(out, (0, sigma, sigma), truncate=3.0, output=out)
    if noise > 0:
        tex = _noise_texture(T)
        oy, ox = (int(v) for v in rng.integers(0, tex.shape[1] - T + 1, 2))
        k = int(rng.integers(0, 8))
        win = tex[:, oy : oy + T, ox : ox + T]
        out += np.rot90(win if k < 4 else win[..., ::-1], k % 4, axes=(1, 2)) * np.float32(noise)
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.transpose(1, 2, 0).astype(np.uint8, order="C")
