"""The project's renderer as a source (:func:`import_procedural`) and platelet clumps built from single thrombocytes already in the bank (:func:`synthesize_clumps`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np

from ...classes import CLASS_NAMES, BloodClass
from .. import masks as M
from ..scale import (
    TARGET_RBC_DIAMETER,
    ScaleEstimate,
)
from ..store import Bank, Sample, make_sample_id, stratified_splits
from .base import LICENCES, ImportReport, SourceInfo

PROCEDURAL_CLASSES: tuple[int, ...] = tuple(int(c) for c in BloodClass if c != BloodClass.BACKGROUND)


def import_procedural(bank: Bank, per_class: int = 20, seed: int = 0) -> ImportReport:
    """Add ``per_class`` rendered cells of every cell class (source 'procedural', synthetic=1,
    licence BSD-3-Clause), deterministic in ``seed``. Each sample is its own split group; the
    cells of each class are split by :func:`stratified_splits` (80/10/10, and every split has every
    class from three per class on)."""
    from ...render import render_cell  # the project's renderer

    if per_class < 1:
        raise ValueError(f"--per-class must be positive, got {per_class}")
    t0 = time.perf_counter()
    source = "procedural"
    scale = ScaleEstimate(TARGET_RBC_DIAMETER, 0, "rendered at the bank scale")
    info = SourceInfo(source, LICENCES["procedural"], scale)
    report = ImportReport("procedural", "napari_bloodseg.render", {source: info})
    splits = stratified_splits(per_class)
    for cls in PROCEDURAL_CLASSES:
        for i in range(per_class):
            key = f"seed={seed}/{CLASS_NAMES[cls]}"
            if make_sample_id(source, key, i) in bank:
                report.already += 1
                continue
            rng = np.random.default_rng([seed, cls, i])
            rgba = np.asarray(render_cell(cls, TARGET_RBC_DIAMETER, rng))
            rgba = np.dstack([rgba[..., :3], np.where(rgba[..., 3] >= 128, 255, 0)]).astype(np.uint8)
            s = bank.add(
                rgba, cls, source=source, source_file=key, index=i, licence=info.licence,
                source_rbc_diameter_px=TARGET_RBC_DIAMETER, scale_factor=1.0,
                group=f"{source}:{seed}:{cls}:{i}", synthetic=True, split=splits[i],
            )
            report.files += 1
            if s is not None:
                report.added[cls] += 1
    report.moved = bank.balance_splits([source])  # banks made before splits were stratified
    bank.save()
    report.seconds = time.perf_counter() - t0
    return report


def _compose_clump(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Touching/overlapping aggregate of RGBA platelet sprites (later ones on top, alpha = union)."""
    sprites = []
    for m in members:
        k = int(rng.integers(4))
        s = np.rot90(m, k)
        if rng.random() < 0.5:
            s = s[:, ::-1]
        sprites.append(np.ascontiguousarray(s))
    radii = [0.5 * math.sqrt(max(1, (s[..., 3] > 0).sum()) / math.pi) * 2 for s in sprites]
    size = int(sum(max(s.shape[:2]) for s in sprites) * 2 + 8)
    canvas = np.zeros((size, size, 4), np.uint8)
    centres: list[tuple[float, float]] = []
    for j, s in enumerate(sprites):
        if not centres:
            cy, cx = size / 2, size / 2
        else:
            for _ in range(20):  # touching or overlapping a random earlier member
                a = int(rng.integers(len(centres)))
                ang = rng.uniform(0, 2 * math.pi)
                dist = (radii[a] + radii[j]) * rng.uniform(0.55, 0.95)
                cy, cx = centres[a][0] + dist * math.sin(ang), centres[a][1] + dist * math.cos(ang)
                # prefer spots that do not bury an earlier member completely
                if all(math.hypot(cy - y, cx - x) > 0.5 * (radii[j] + radii[k]) for k, (y, x) in enumerate(centres)):
                    break
        h, w = s.shape[:2]
        y0, x0 = int(round(cy - h / 2)), int(round(cx - w / 2))
        y0, x0 = min(max(0, y0), size - h), min(max(0, x0), size - w)
        win = canvas[y0 : y0 + h, x0 : x0 + w]
        inside = s[..., 3] > 0
        win[inside, :3] = s[inside, :3]
        win[inside, 3] = 255
        centres.append((y0 + h / 2, x0 + w / 2))
    mask = canvas[..., 3] > 0
    return M.crop_rgba(canvas[..., :3], mask, margin=3)


def synthesize_clumps(
    bank: Bank,
    n: int,
    seed: int = 0,
    sources: Iterable[str] | None = None,
    min_size: int = 3,
    max_size: int = 15,
) -> tuple[int, int]:
    """Build ``n`` platelet clumps of ``min_size``–``max_size`` thrombocyte samples of the bank.

    Each clump takes its platelets from one (source, split) pool, so its split is inherited and
    nothing leaks between splits; it is recorded as source ``<source>-clumps``, synthetic=1, with
    the members' licence and the first member's group. Deterministic in ``seed``: rerunning adds
    nothing twice. Returns (added, already present).
    """
    if n < 0:
        raise ValueError(f"number of clumps must be >= 0, got {n}")
    if not (2 <= min_size <= max_size):
        raise ValueError(f"need 2 <= min_size <= max_size, got {min_size}, {max_size}")
    wanted = None if sources is None else set(sources)
    pools: dict[tuple[str, str], list[Sample]] = {}
    for s in bank.samples(BloodClass.THROMBOCYTE):
        if s.synthetic and s.source != "procedural":
            continue
        if wanted is not None and s.source not in wanted:
            continue
        pools.setdefault((s.source, s.split), []).append(s)
    pools = {k: sorted(v, key=lambda s: s.sample_id) for k, v in pools.items() if len(v) >= min_size}
    if n and not pools:
        raise ValueError(f"no source has {min_size}+ single thrombocytes in one split to build clumps from")
    keys = sorted(pools)
    weights = np.array([len(pools[k]) for k in keys], float)
    weights /= weights.sum() if len(weights) else 1
    tag = "all" if wanted is None else ",".join(sorted(wanted))
    added = already = 0
    for i in range(n):
        sid = make_sample_id("platelet-clumps", f"seed={seed};sources={tag}", i)
        if sid in bank:
            already += 1
            continue
        rng = np.random.default_rng([seed, i])
        key = keys[int(rng.choice(len(keys), p=weights))]
        pool = pools[key]
        k = int(rng.integers(min_size, min(max_size, len(pool)) + 1))
        members = [pool[j] for j in rng.choice(len(pool), size=k, replace=False)]
        rgba = _compose_clump([m.load_rgba() for m in members], rng)
        s = bank.add(
            rgba, BloodClass.PLATELET_CLUMP, source=f"{key[0]}-clumps", source_file="+".join(m.sample_id for m in members),
            index=i, licence=members[0].licence, source_rbc_diameter_px=TARGET_RBC_DIAMETER, scale_factor=1.0,
            group=members[0].group, synthetic=True, split=key[1], sample_id=sid,
        )
        added += s is not None
    bank.save()
    return added, already
