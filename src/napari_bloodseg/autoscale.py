"""Automatic scale from the network itself (after Cellpose's size model + refinement pass).

With a size model in the checkpoint (scalehead.py): each candidate window's features give an
estimate of the RBC diameter, and the answer is their weighted median, candidates near the training
size counting most (a median, so one misread window cannot drag it). One more pass at that scale
measures the RBCs the network finds and moves the estimate half-way to that measurement when there
are at least REFINE_MIN_CELLS of them and they agree (±35 %). Without a size model, the older rule
below applies.

The model knows healthy RBCs at one size (36 px) and, trained with zoom jitter, still finds them
when they are a third larger or smaller. So: look at one window of the image at a few candidate
scales (√2 apart, 9-288 px, all in one batch), measure the RBCs the network finds at each, keep
the candidate where the network is surest of its map and its RBCs come out near the training size,
and refine the diameter by the measured size; a second pass at the refined scale confirms it. Measuring is by each RBC blob's
widest inscribed disc, which holds for touching and border-cut cells alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .classes import RBC_CLASSES

CANDIDATES = tuple(round(9 * 2 ** (k / 2), 1) for k in range(11))  # 9 … 288 px, a factor √2 apart
MIN_CELLS = 3


@dataclass
class ScaleResult:
    diameter: float  # healthy-RBC diameter in the input image, px
    cells: int  # RBC blobs the final measurement rests on
    method: str  # 'network' or 'classical'


def _window(rgb: np.ndarray, d: float, train_d: float, tile: int) -> np.ndarray:
    """The centre window of the image that fills one tile at scale d → train_d, resized to it."""
    from .infer import _resize_uint8

    h, w = rgb.shape[:2]
    s = train_d / d
    side = int(round(tile / s))
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    crop = rgb[y0 : y0 + side, x0 : x0 + side]
    ch, cw = crop.shape[:2]
    nh, nw = max(8, min(tile, round(ch * s))), max(8, min(tile, round(cw * s)))
    return _resize_uint8(crop, nh, nw, smooth=True)


def measure_rbc_blobs(labels: np.ndarray, rbc_diameter: float, valid: tuple[int, int] | None = None) -> tuple[float | None, int]:
    """(median RBC diameter in ``labels``' px, blobs measured) from the widest inscribed disc of each
    RBC-class blob of a plausible size for RBCs of about ``rbc_diameter`` px (area-weighted, so that
    fragments barely count); None when fewer than MIN_CELLS. ``valid``: the rows and columns of
    ``labels`` that hold the image (the rest is padding). On a map whose RBCs are single cells this
    is their diameter; where the map runs RBCs and the glass between them into sheets it is larger."""
    valid = labels.shape if valid is None else valid
    lab = labels[: valid[0], : valid[1]]
    rbc = np.isin(lab, [int(c) for c in RBC_CLASSES])
    if not rbc.any():
        return None, 0
    comp, n = ndi.label(rbc)
    dist = ndi.distance_transform_edt(np.pad(rbc, 1))[1:-1, 1:-1]
    widths = 2 * np.asarray(ndi.maximum(dist, comp, index=np.arange(1, n + 1)))
    areas = np.bincount(comp.ravel())[1:]
    keep = (areas >= 0.15 * math.pi * (rbc_diameter / 2) ** 2) & (widths >= 0.3 * rbc_diameter)
    if keep.sum() < MIN_CELLS:
        return None, int(keep.sum())
    # area-weighted median: fragments barely count
    w, a = widths[keep], areas[keep]
    order = np.argsort(w)
    cum = np.cumsum(a[order])
    return float(w[order][np.searchsorted(cum, cum[-1] / 2)]), int(keep.sum())


HEAD_CANDIDATES = tuple(round(9 * 2.0**k, 1) for k in range(6))  # 9 … 288 px, a factor 2 apart
REFINE_MIN_CELLS = 8  # RBC blobs the refinement needs (WBC-centred crops have fewer: the size model decides)
HEAD_SIGMA = 1.2  # how fast a candidate's weight falls with its predicted distance u from the training size


def estimate_scale(segmenter, rgb: np.ndarray, candidates: tuple[float, ...] | None = None) -> ScaleResult | None:
    """Healthy-RBC diameter (px) of ``rgb`` (uint8 RGB) by the network, or None when it cannot
    tell (no size model and no RBCs at any candidate scale)."""
    train_d, tile = float(segmenter.info.rbc_diameter_px), segmenter.scale_window
    h, w = rgb.shape[:2]
    head = segmenter.info.scale_head
    if candidates is None:
        candidates = HEAD_CANDIDATES if head is not None else CANDIDATES
    # candidates that leave a window of at least 16 model px
    cands = [d for d in candidates if min(h, w) * train_d / d >= 16]
    if not cands:
        return None
    if head is not None:
        return _estimate_with_head(segmenter, head, rgb, cands, train_d, tile)
    best = None
    wins = [_window(rgb, d, train_d, tile) for d in cands]
    probs = _predict(segmenter, wins)
    for d, win, p in zip(cands, wins, probs):
        m, n = measure_rbc_blobs(p.argmax(0), train_d, win.shape[:2])
        if m is None:
            continue
        # a wrong scale leaves the network unsure (cells it never saw at that size)
        score = float(p.max(0).mean()) - 0.1 * abs(math.log(m / train_d))
        if best is None or score > best[0]:
            best = (score, d * m / train_d, n)
    if best is None:
        return None
    d1 = best[1]
    # confirm at the refined scale: the network now sees RBCs near its own size
    m, n = _measure_at(segmenter, rgb, d1, train_d, tile)
    if m is None:
        return ScaleResult(d1, best[2], "network")
    d2 = d1 * m / train_d
    return ScaleResult(float(math.sqrt(d1 * d2)), n, "network")


def _estimate_with_head(segmenter, head, rgb, cands, train_d: float, tile: int) -> ScaleResult:
    from .scalehead import window_features

    wins = [_window(rgb, d, train_d, tile) for d in cands]
    feats = window_features(segmenter, _pad_batch(wins, tile), classes=head.reads_classes)
    u = head.predict(feats)
    logd = np.log(cands) + u
    # weighted median: one candidate the head misreads (a window of glass, a tiny window) cannot
    # drag the estimate, and those nearer the training size count more
    wts = np.exp(-0.5 * (u / HEAD_SIGMA) ** 2) + 1e-6
    order = np.argsort(logd)
    cum = np.cumsum(wts[order])
    d = float(np.exp(logd[order][np.searchsorted(cum, cum[-1] / 2)]))
    # refine by the RBCs the network measures at that scale, when there are enough of them to trust
    # and they agree: exact on clean RBC-rich fields, where the size model alone is off by up to 20 %.
    # One pass: a second one (when the first moved the estimate by over 10 %) was less often within
    # 15 % of the truth on the real fields of bench_scale (mean over sources 0.782 against 0.803).
    m, n = _measure_at(segmenter, rgb, d, train_d, tile)
    if m is not None and n >= REFINE_MIN_CELLS and abs(math.log(m / train_d)) < math.log(1.35):
        d *= math.sqrt(m / train_d)
    return ScaleResult(d, n, "network")


def _measure_at(segmenter, rgb: np.ndarray, d: float, train_d: float, tile: int) -> tuple[float | None, int]:
    """:func:`measure_rbc_blobs` of the network's map of the window cut at candidate diameter ``d``."""
    win = _window(rgb, d, train_d, tile)
    return measure_rbc_blobs(_predict(segmenter, [win])[0].argmax(0), train_d, win.shape[:2])


def _pad_batch(windows: list[np.ndarray], t: int) -> np.ndarray:
    batch = []
    for win in windows:
        h, w = win.shape[:2]
        mode = "reflect" if min(h, w) > 1 else "edge"
        batch.append(np.pad(win, ((0, t - h), (0, t - w), (0, 0)), mode=mode) if (h, w) != (t, t) else win)
    return np.stack(batch)


def _predict(segmenter, windows: list[np.ndarray]) -> list[np.ndarray]:
    """Class probabilities of each window, padded to one tile (mirrored) and cropped back."""
    probs = segmenter.predict_tiles(_pad_batch(windows, segmenter.scale_window))
    return [p[:, : win.shape[0], : win.shape[1]] for p, win in zip(probs, windows)]




# ---------------------------------------------------------------- one scale for a run of images

SHARED_SPREAD_WARN = 1.5  # quartile ratio of the per-image estimates above which a shared scale is doubtful
SHARED_DOUBT_TEXT = ("they disagree more than images of one magnification do: check that the images share one "
                     "microscope and objective")


@dataclass
class SharedScale:
    """One RBC diameter for images from one microscope at one magnification: the median of their
    estimates. A single image's estimate scatters by up to a third on WBC-centred crops with few
    RBCs; the median of ten is within 15 % of the truth on nearly every benchmark field."""

    diameter: float  # px, median of the estimates (in log)
    estimates: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.estimates)

    @property
    def quartiles(self) -> tuple[float, float]:
        """Lower and upper quartile of the estimates, px."""
        q1, q3 = np.exp(np.percentile(np.log(self.estimates), [25, 75]))
        return float(q1), float(q3)

    @property
    def spread(self) -> float:
        """Upper over lower quartile of the estimates (1.0: all agree)."""
        q1, q3 = self.quartiles
        return q3 / q1

    @property
    def doubtful(self) -> bool:
        """The estimates disagree more than images of one magnification do."""
        return self.n >= 4 and self.spread > SHARED_SPREAD_WARN

    def as_dict(self) -> dict:
        """For the run summary JSON."""
        lo, hi = self.quartiles
        return {"rbc_diameter_px": round(self.diameter, 2), "images": self.n,
                "quartiles_px": [round(lo, 2), round(hi, 2)], "doubtful": self.doubtful}

    def text(self) -> str:
        """e.g. 'median of 12 images' estimates (quartiles 31.0-36.5 px)'."""
        lo, hi = self.quartiles
        return f"{self.method_text()} (quartiles {lo:.1f}-{hi:.1f} px)"

    def method_text(self) -> str:
        """For reports, e.g. 'median of 12 images' estimates'."""
        return f"median of {self.n} image{'s' if self.n != 1 else ''}' estimates"


def shared_scale(estimates) -> SharedScale:
    """The :class:`SharedScale` of per-image RBC diameter estimates (px)."""
    est = tuple(float(d) for d in estimates)
    if not est:
        raise ValueError("a shared RBC diameter needs at least one image's estimate")
    if not all(d > 0 and math.isfinite(d) for d in est):
        raise ValueError(f"RBC diameter estimates must be positive numbers of pixels, got {est}")
    return SharedScale(float(np.exp(np.median(np.log(est)))), est)
