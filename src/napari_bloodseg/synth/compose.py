"""Layout: RBC background fields, the per-split plan of field kinds and cell combinations, and composing one tile (cells placed on a crop of its field)."""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..classes import (
    CLASS_NAMES,
    WBC_CLASSES,
    BloodClass,
)
from .config import (
    _KIND_CLASSES,
    CELL_CLASSES,
    KINDS,
    MODEL_RBC_DIAMETER,
    PLATELET_OPTIONS,
    SynthConfig,
    _split_code,
)
from .encode import instance_table
from .pool import PoolSample, SamplePool
from .realism import _finish
from .sprites import _d8, _make_sprite, _paste, _paste_hard, _Sprite


@dataclass
class _Field:
    rgb: np.ndarray  # (F, F, 3) uint8
    inst: np.ndarray  # (F, F) int32, 0 = no RBC
    classes: np.ndarray  # (n + 1,) class of each instance id (0 → 0)
    paths: list[str]  # samplePath of instance id k at index k - 1
    kind: str
    scale: float
    name: str  # bgPath
    bg: np.ndarray  # (3,) float32 plain background colour


_DEFAULT_BG = np.array([235.0, 225.0, 225.0], np.float32)


class _Plan:
    """Which background kind and cell combination each image of a split gets."""

    def __init__(self, pool: SamplePool, split: str, seed: int, cfg: SynthConfig):
        self.split, self.seed, self.cfg = split, int(seed), cfg
        self.code = _split_code(split)
        have = {c for c in CELL_CLASSES if pool._of(c, split)}
        self.kinds = [k for k in KINDS if all(c in have for c in _KIND_CLASSES[k])] or ["empty"]
        wbcs = [int(c) for c in WBC_CLASSES if int(c) in have]
        wbc_opts: list[tuple[int, ...]] = [()] + [(a,) for a in wbcs]
        wbc_opts += [(a, b) for i, a in enumerate(wbcs) for b in wbcs[i + 1 :]]
        thr, clump = int(BloodClass.THROMBOCYTE) in have, int(BloodClass.PLATELET_CLUMP) in have
        plt_opts = [p for p in PLATELET_OPTIONS if (p != "thrombocyte" or thr) and (p != "clump" or clump) and (p != "both" or (thr and clump))]
        self.combos: list[tuple[tuple[int, ...], str]] = [(w, p) for w in wbc_opts for p in plt_opts]

    def field_kind(self, f: int) -> str:
        nk = len(self.kinds)
        perm = np.random.default_rng([self.seed, self.code, 2, f // nk]).permutation(nk)
        return self.kinds[int(perm[f % nk])]

    def combo(self, index: int) -> tuple[tuple[int, ...], str]:
        cpf = self.cfg.crops_per_field
        f = index // cpf
        nk = len(self.kinds)
        k = self.kinds.index(self.field_kind(f))
        local = (f // nk) * cpf + index % cpf  # index among this kind's images
        nc = len(self.combos)
        perm = np.random.default_rng([self.seed, self.code, 3, k, local // nc]).permutation(nc)
        return self.combos[int(perm[local % nc])]


def _make_field(pool: SamplePool, plan: _Plan, f: int) -> _Field:
    cfg = plan.cfg
    rng = np.random.default_rng([plan.seed, plan.code, 0, f])
    kind = plan.field_kind(f)
    F = cfg.field_size
    scale = 1.0 + float(rng.uniform(-cfg.scale_jitter, cfg.scale_jitter))
    density = float(rng.uniform(*cfg.rbc_density))
    overlap = float(rng.uniform(*cfg.rbc_overlap))
    p_inf = float(rng.uniform(*cfg.mixed_infected_fraction))
    name = f"fields/{plan.split}/{kind}_{f:05d}"

    variants: list[_Sprite] = []
    per_class: list[int] = []
    for c in _KIND_CLASSES.get(kind, ()):
        cand = pool._of(c, plan.split)
        K = cfg.rbc_variants
        pick = rng.choice(len(cand), K, replace=False) if len(cand) > K else rng.integers(0, len(cand), K)
        n0 = len(variants)
        for j in pick.tolist():
            sp = _make_sprite(pool, cand[j], rng, scale * (1 + float(rng.normal(0, 0.03))), cfg.object_color_jitter, stats=True)
            if sp is not None:
                variants.append(sp)
        per_class.append(len(variants) - n0)

    # one slide, one stain: pull every RBC's colour towards one reference sample's (harmony h:
    # gain = (reference / own) ** h), and take that sample's background; this also keeps the model
    # from learning a source's colour as the infected/healthy cue when the two come from different sources
    bgs = [v.bg for v in variants if v.bg is not None]
    bg = np.median(np.stack(bgs), 0).astype(np.float32) if bgs else _DEFAULT_BG.copy()
    if variants and cfg.field_color_harmony > 0:
        ref = variants[int(rng.integers(len(variants)))]
        if ref.bg is not None:
            bg = ref.bg.copy()
        for v in variants:
            gain = (ref.mean / np.maximum(v.mean, 1.0)) ** cfg.field_color_harmony
            v.rgb = v.rgb * gain.astype(np.float32)
    canvas = np.empty((F, F, 3), np.uint8)
    canvas[:] = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    # RBC sprites pre-blended with the field's background at their soft rim, then pasted by mask
    flat8 = [np.clip(bg * (1.0 - v.alpha) + v.rgb + 0.5, 0, 255).astype(np.uint8) for v in variants]
    inst = np.zeros((F, F), np.int32)
    classes = [0]
    paths: list[str] = []

    if variants:
        from scipy.spatial import cKDTree

        radii = np.array([v.radius for v in variants])
        areas = np.array([float(v.hard.sum()) for v in variants])
        rmax = float(radii.max())
        target = density * F * F
        if len(per_class) == 2:
            n_inf = per_class[0]
        cen = np.zeros((0, 2))
        rad = np.zeros(0)
        chosen: list[tuple[int, int, float, float]] = []  # (variant, dihedral, cy, cx)
        area = 0.0
        for _round in range(40):
            if area >= target:
                break
            m = int(np.clip((target - area) / areas.mean() * 3 + 32, 64, 8192))
            c = rng.uniform(-rmax, F + rmax, (m, 2))
            if len(per_class) == 2:
                v = np.where(
                    rng.random(m) < p_inf,
                    rng.integers(0, max(n_inf, 1), m),
                    n_inf + rng.integers(0, max(len(variants) - n_inf, 1), m),
                )
                v = np.clip(v, 0, len(variants) - 1)
            else:
                v = rng.integers(0, len(variants), m)
            d8 = rng.integers(0, 8, m)
            r = radii[v]
            bad = np.zeros(m, bool)
            reach = 2 * rmax
            if len(cen):
                pairs = cKDTree(c).sparse_distance_matrix(cKDTree(cen), reach, output_type="ndarray")
                if len(pairs):
                    i, j, dd = pairs["i"], pairs["j"], pairs["v"]
                    bad[i[dd < (1 - overlap) * (r[i] + rad[j])]] = True
            ok = np.flatnonzero(~bad)
            if not len(ok):
                continue
            conflicts: dict[int, list[int]] = {}
            pp = cKDTree(c[ok]).query_pairs(reach, output_type="ndarray")
            if len(pp):
                a, b = ok[pp[:, 0]], ok[pp[:, 1]]
                dd = np.hypot(*(c[a] - c[b]).T)
                close = dd < (1 - overlap) * (r[a] + r[b])
                for p_, q_ in zip(a[close].tolist(), b[close].tolist()):
                    lo, hi = (p_, q_) if p_ < q_ else (q_, p_)
                    conflicts.setdefault(hi, []).append(lo)
            taken: set[int] = set()
            new = []
            cand_area = areas[v].tolist()
            for k in ok.tolist():
                if area >= target:
                    break
                if any(q in taken for q in conflicts.get(k, ())):
                    continue
                taken.add(k)
                new.append(k)
                area += cand_area[k]
            if new:
                nk = np.array(new)
                cen = np.vstack([cen, c[nk]])
                rad = np.concatenate([rad, r[nk]])
                chosen.extend((int(v[k]), int(d8[k]), float(c[k, 0]), float(c[k, 1])) for k in new)
        views: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        iid = 0
        for vi, d, cy, cx in chosen:
            view = views.get((vi, d))
            if view is None:
                view = views[(vi, d)] = (_d8(flat8[vi], d), _d8(variants[vi].hard, d))
            h, w = view[1].shape
            if _paste_hard(canvas, inst, view[0], view[1], int(round(cy - h / 2)), int(round(cx - w / 2)), iid + 1):
                iid += 1
                classes.append(variants[vi].cls)
                paths.append(variants[vi].path)
    return _Field(canvas, inst, np.array(classes, np.uint8), paths, kind, scale, name, bg)


@dataclass
class SynthImage:
    """One composed tile and its ground truth."""

    id: str
    split: str
    index: int
    image: np.ndarray  # (T, T, 3) uint8
    mask: np.ndarray  # (T, T) uint8 class ids
    instances: np.ndarray  # (T, T) int32, 1..n in label order, 0 = background
    objects: list[dict]  # labels JSON entries (reference keys), object k ↔ instance k + 1
    kind: str
    combo: tuple[tuple[int, ...], str]
    rles: list[str] | None = None  # COCO compressed RLE of instance k + 1 (None if not computed)
    areas: np.ndarray | None = None  # pixels of instance k + 1

    def labels_json(self) -> dict:
        return {str(k): o for k, o in enumerate(self.objects)}

    def labels_bytes(self) -> bytes:
        """The labels JSON as written: one object per line (C encoder; indent= is 10x slower)."""
        body = ",\n".join(f' "{k}": {json.dumps(o)}' for k, o in enumerate(self.objects))
        return ("{\n" + body + "\n}\n").encode() if body else b"{}\n"


def image_id(split: str, index: int, n: int = 0) -> str:
    return f"{split}_{index:0{max(6, len(str(max(n - 1, 0))))}d}"


def _place(rng: np.random.Generator, T: int, h: int, w: int, cut: bool) -> tuple[float, float]:
    if cut or h >= T or w >= T:
        return float(rng.uniform(0, T)), float(rng.uniform(0, T))
    return float(rng.uniform(h / 2, T - h / 2)), float(rng.uniform(w / 2, T - w / 2))


def _platelet_shrink(pool: SamplePool, s: PoolSample, scale: float, size: tuple[float, float], rng: np.random.Generator) -> float:
    """Factor that brings a thrombocyte larger than ``size[1]`` RBC diameters to a random size in ``size``."""
    area = float(np.count_nonzero(pool.load(s)[1]))
    d = 2.0 * math.sqrt(area / math.pi) * pool.scale * scale / MODEL_RBC_DIAMETER
    if d <= size[1]:
        return 1.0
    return float(rng.uniform(size[0], size[1])) / d


def _compose(pool: SamplePool, plan: _Plan, index: int, fld: _Field, n: int = 0, rle: bool = True) -> SynthImage:
    cfg = plan.cfg
    T = cfg.tile
    rng = np.random.default_rng([plan.seed, plan.code, 1, index])
    F = cfg.field_size
    y, x = (int(v) for v in rng.integers(0, F - T + 1, 2))
    canvas = fld.rgb[y : y + T, x : x + T].astype(np.float32)
    inst = fld.inst[y : y + T, x : x + T].copy()
    wbcs, plt = plan.combo(index)
    todo: list[int] = []
    if plt in ("thrombocyte", "both"):
        todo += [int(BloodClass.THROMBOCYTE)] * int(rng.integers(cfg.thrombocytes[0], cfg.thrombocytes[1] + 1))
    if plt in ("clump", "both"):
        todo.append(int(BloodClass.PLATELET_CLUMP))
    todo += list(wbcs)  # WBCs last: on top
    classes = list(fld.classes.tolist())
    paths = list(fld.paths)
    placed: list[tuple[float, float, float]] = []
    for c in todo:
        cand = _samples_of(pool, c, plan.split)
        s = cand[int(rng.integers(len(cand)))]
        sc = fld.scale * (1 + float(rng.uniform(-cfg.object_scale_jitter, cfg.object_scale_jitter)))
        if c == BloodClass.THROMBOCYTE and cfg.thrombocyte_size is not None:
            sc *= _platelet_shrink(pool, s, sc, cfg.thrombocyte_size, rng)
        sp = _make_sprite(pool, s, rng, sc, cfg.object_color_jitter)
        if sp is None:
            continue
        h, w = sp.hard.shape
        cut = bool(rng.random() < cfg.wbc_cut_fraction)
        cy, cx = _place(rng, T, h, w, cut)
        for _ in range(20):  # keep affixed objects apart when there is room
            if all(math.hypot(cy - py, cx - px) >= 0.9 * (sp.radius + pr) for py, px, pr in placed):
                break
            cy, cx = _place(rng, T, h, w, cut)
        iid = len(classes)
        if _paste(canvas, inst, sp, int(round(cy - h / 2)), int(round(cx - w / 2)), iid):
            classes.append(c)
            paths.append(s.path)
            placed.append((cy, cx, sp.radius))
    img = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    img = _finish(img, rng, cfg)

    cls_lut = np.array(classes, np.uint8)
    mask = cls_lut[inst]
    counts = np.bincount(inst.ravel(), minlength=len(classes))
    present = np.flatnonzero(counts[1:]) + 1
    relabel = np.zeros(len(classes), np.int32)
    relabel[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    compact = relabel[inst]
    rles, areas, bboxes = instance_table(compact, len(present), rle=rle)

    objects = []
    for k, (tlx, tly, bw, bh) in enumerate(bboxes.tolist()):
        old = int(present[k])
        c = int(classes[old])
        objects.append(
            {
                "className": CLASS_NAMES[c],
                "classIdx": c,
                "posX": int(tlx + (bw + 1) // 2),
                "posY": int(tly + (bh + 1) // 2),
                "bboxW": int(bw),
                "bboxH": int(bh),
                "tlX": int(tlx),
                "tlY": int(tly),
                "samplePath": paths[old - 1],
                "bgPath": fld.name,
            }
        )
    return SynthImage(
        image_id(plan.split, index, n), plan.split, index, img, mask, compact, objects, fld.kind, (wbcs, plt), rles, areas
    )


def _samples_of(pool: SamplePool, cls: int, split: str) -> list[PoolSample]:
    cand = pool._of(cls, split)
    if not cand:
        raise ValueError(f"no {CLASS_NAMES[cls]} samples in split {split!r}")
    return cand


class _Composer:
    """Plans and a small field cache for one pool + seed + config (one per process)."""

    def __init__(self, pool: SamplePool, seed: int, cfg: SynthConfig, field_cache: int = 2):
        self.pool, self.seed, self.cfg = pool, int(seed), cfg
        self._plans: dict[str, _Plan] = {}
        self._fields: OrderedDict[tuple[str, int], _Field] = OrderedDict()
        self._field_cache = max(1, int(field_cache))
        self._lock = threading.Lock()

    def plan(self, split: str) -> _Plan:
        p = self._plans.get(split)
        if p is None:
            p = self._plans[split] = _Plan(self.pool, split, self.seed, self.cfg)
        return p

    def field(self, split: str, f: int) -> _Field:
        key = (split, f)
        with self._lock:
            fld = self._fields.get(key)
            if fld is not None:
                self._fields.move_to_end(key)
                return fld
        fld = _make_field(self.pool, self.plan(split), f)
        with self._lock:
            self._fields[key] = fld
            while len(self._fields) > self._field_cache:
                self._fields.popitem(last=False)
        return fld

    def image(self, split: str, index: int, n: int = 0, rle: bool = True) -> SynthImage:
        plan = self.plan(split)
        return _compose(self.pool, plan, int(index), self.field(split, int(index) // self.cfg.crops_per_field), n, rle)


def compose_image(pool: SamplePool, split: str, index: int, seed: int = 0, config: SynthConfig | None = None) -> SynthImage:
    """Image ``index`` of ``split`` exactly as :func:`synthesize` writes it (builds its field)."""
    return _Composer(pool, seed, config or SynthConfig(), field_cache=1).image(split, index)
