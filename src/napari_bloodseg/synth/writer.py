"""Writing a set: output checks, the job runner (worker processes, field-grouped jobs), labels/COCO writers and :func:`synthesize`."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..classes import (
    CLASS_NAMES,
    CLASSES,
    PLATELET_CLASSES,
    RBC_CLASSES,
    WBC_CLASSES,
    class_table,
)
from ..steps import drain
from .compose import _Composer
from .config import (
    COCO_NAME,
    DEFAULT_COUNTS,
    SET_FORMAT,
    SET_JSON,
    SET_VERSION,
    SynthConfig,
)
from .encode import encode_png
from .pool import SamplePool, format_missing, missing_classes
from .reader import _is_synth_root


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _coco_categories() -> list[dict]:
    sup = {int(c): "WBC" for c in WBC_CLASSES} | {int(c): "platelet" for c in PLATELET_CLASSES} | {int(c): "RBC" for c in RBC_CLASSES}
    return [{"id": c.id, "name": c.name, "supercategory": sup[c.id], "color": list(c.color)} for c in CLASSES[1:]]


_W: dict = {}  # worker-process state (multiprocessing initializer)


def _init_worker(pool: SamplePool, seed: int, cfg: SynthConfig, out: str, counts: dict[str, int]) -> None:
    _W.clear()
    _W.update(_job_state(pool, seed, cfg, out, counts))


def _job_state(pool: SamplePool, seed: int, cfg: SynthConfig, out: str, counts: dict[str, int]) -> dict:
    return {"composer": _Composer(pool, seed, cfg, field_cache=1), "out": Path(out), "counts": counts}


def _run_job(job: tuple[str, int, int]) -> tuple[str, list[tuple[int, str, list[tuple]]]]:
    return _run_job_with(_W, job)


def _run_job_with(state: dict, job: tuple[str, int, int]) -> tuple[str, list[tuple[int, str, list[tuple]]]]:
    """Compose and write images [i0, i1) of a split (one field's crops); return COCO rows."""
    split, i0, i1 = job
    comp: _Composer = state["composer"]
    out: Path = state["out"] / split
    n = state["counts"][split]
    level = comp.cfg.png_level
    rows = []
    for i in range(i0, i1):
        si = comp.image(split, i, n)
        _atomic_write(out / "images" / f"{si.id}.png", encode_png(si.image, level))
        _atomic_write(out / "masks" / f"{si.id}.png", encode_png(si.mask, level))
        _atomic_write(out / "labels" / f"{si.id}.json", si.labels_bytes())
        anns = [
            (o["classIdx"], [o["tlX"], o["tlY"], o["bboxW"], o["bboxH"]], int(a), r)
            for o, r, a in zip(si.objects, si.rles, si.areas.tolist())
        ]
        rows.append((i, si.id, anns))
    return split, rows


def _jobs(counts: dict[str, int], cpf: int) -> list[tuple[str, int, int]]:
    jobs = []
    for split, n in counts.items():
        for i0 in range(0, n, cpf):
            jobs.append((split, i0, min(i0 + cpf, n)))
    return jobs


def _mp_context():
    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.current_thread() is threading.main_thread():
        return mp.get_context("fork")
    return mp.get_context("spawn")  # from a GUI worker thread: never fork a threaded process


def check_output(out: str | os.PathLike, overwrite: bool = False) -> bool:
    """Raise FileExistsError unless ``out`` may be written: new or empty, or an earlier synthesized
    set with ``overwrite``. Returns True if an earlier set would be replaced. No side effects."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose a new folder or pass --overwrite")
        if not _is_synth_root(out):
            raise FileExistsError(
                f"{out} is not empty and is not a synthesized set (no {SET_JSON}); refusing to clear it, choose a new folder"
            )
        return True
    return False


def prepare_output(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check the output folder (:func:`check_output`); with ``overwrite``, remove an earlier set's
    split folders and synth.json (nothing else)."""
    out = Path(out)
    if check_output(out, overwrite):
        for sp in out.iterdir():
            if sp.is_dir() and (sp / "images").is_dir() and (sp / "masks").is_dir():
                shutil.rmtree(sp)
        (out / SET_JSON).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_counts(counts: dict[str, int]) -> dict[str, int]:
    clean = {}
    for sp, n in counts.items():
        if isinstance(n, bool) or int(n) != n or int(n) < 0:
            raise ValueError(f"image count for {sp} must be a non-negative integer, got {n!r}")
        if "/" in sp or "\\" in sp or sp in ("", ".", ".."):
            raise ValueError(f"bad split name {sp!r}")
        if int(n) > 0:
            clean[sp] = int(n)
    if not clean:
        raise ValueError("nothing to synthesize: every split count is 0")
    return clean


def iter_synthesize(
    pool: SamplePool,
    out: str | os.PathLike,
    counts: dict[str, int] | None = None,
    *,
    seed: int = 0,
    workers: int = 1,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    allow_missing: bool = False,
) -> Iterator[tuple[int, int]]:
    """Write a synthesized set; yields (images done, total) as it goes and returns a summary dict
    (``summary = yield from iter_synthesize(...)``). Closing the generator stops the workers
    (the set is then left incomplete: synth.json says ``"complete": false``)."""
    cfg = config or SynthConfig()
    counts = _check_counts(dict(DEFAULT_COUNTS if counts is None else counts))
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    workers = max(1, int(workers))
    lack = missing_classes(pool, counts)
    if lack and not allow_missing:
        raise ValueError(f"the sample pool lacks classes: {format_missing(lack)} (add samples, or allow missing classes)")
    for sp in counts:
        if not pool.samples(split=sp):
            raise ValueError(f"the sample pool has no samples at all for split {sp!r}")
    out = prepare_output(out, overwrite)
    meta = {
        "format": SET_FORMAT,
        "version": SET_VERSION,
        "complete": False,
        "seed": seed,
        "counts": counts,
        "splits": list(counts),
        "tile": cfg.tile,
        "layout": {
            "images": "<split>/images/<id>.png",
            "masks": "<split>/masks/<id>.png",
            "labels": "<split>/labels/<id>.json",
            "coco": f"<split>/{COCO_NAME}",
        },
        "config": cfg.to_dict(),
        "pool": pool.describe(),
        "missing_classes": {sp: [CLASS_NAMES[c] for c in cl] for sp, cl in lack.items()},
        "class_table": class_table(),
    }
    _atomic_write(out / SET_JSON, json.dumps(meta, indent=1).encode())
    for sp in counts:
        for sub in ("images", "masks", "labels"):
            (out / sp / sub).mkdir(parents=True, exist_ok=True)

    total = sum(counts.values())
    jobs = _jobs(counts, cfg.crops_per_field)
    t0 = time.perf_counter()
    mpool = None
    if workers > 1 and len(jobs) > 1:
        if pool.kind == "procedural":
            pool.preload(list(counts))  # render once, ship to the workers
        mpool = _mp_context().Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(pool, seed, cfg, str(out), counts))
        results = mpool.imap(_run_job, jobs, chunksize=1)
    else:
        state = _job_state(pool, seed, cfg, str(out), counts)
        results = (_run_job_with(state, j) for j in jobs)

    writers: dict[str, _CocoWriter] = {}
    done = 0
    try:
        yield (0, total)
        for split, rows in results:
            w = writers.get(split)
            if w is None:
                w = writers[split] = _CocoWriter(out / split / COCO_NAME, split, seed, cfg.tile)
            for i, iid, anns in rows:
                w.add(i, iid, anns)
            done += len(rows)
            if w.n_images == counts[split]:  # jobs come in order, split by split
                w.close()
            yield (done, total)
        if mpool is not None:
            mpool.close()
            mpool.join()
            mpool = None
    finally:
        if mpool is not None:
            mpool.terminate()
            mpool.join()
        for w in writers.values():
            w.abort()
    seconds = time.perf_counter() - t0
    meta["complete"] = True
    _atomic_write(out / SET_JSON, json.dumps(meta, indent=1).encode())
    return {"out": str(out), "counts": counts, "images": total, "seconds": seconds, "images_per_s": total / max(seconds, 1e-9)}


class _CocoWriter:
    """Streams one split's COCO instances file (annotations as they come, then the images list)."""

    def __init__(self, path: Path, split: str, seed: int, tile: int):
        self.path, self.tile = path, tile
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.fh = open(self.tmp, "w", encoding="utf-8")
        info = {
            "description": f"napari-bloodseg synthetic blood smear tiles, split {split}",
            "version": str(SET_VERSION),
            "split": split,
            "seed": seed,
            "background_id": 0,
            "mask_values": "masks/<id>.png hold class ids (0 = background)",
        }
        head = json.dumps({"info": info, "licenses": [], "categories": _coco_categories(), "class_table": class_table()})
        self.fh.write(head[:-1] + ', "annotations": [')
        self.images: list[str] = []
        self.n_ann = 0
        self.n_images = 0
        self.closed = False

    def add(self, index: int, iid: str, anns: list[tuple]) -> None:
        img_id = index + 1
        self.images.append(
            json.dumps({"id": img_id, "file_name": f"images/{iid}.png", "mask_name": f"masks/{iid}.png", "width": self.tile, "height": self.tile})
        )
        self.n_images += 1
        parts = []
        for cls, bbox, area, rle in anns:
            self.n_ann += 1
            parts.append(
                '{"id": %d, "image_id": %d, "category_id": %d, "iscrowd": 0, "area": %d, "bbox": %s, '
                '"segmentation": {"size": [%d, %d], "counts": %s}}'
                % (self.n_ann, img_id, cls, area, json.dumps(bbox), self.tile, self.tile, json.dumps(rle))
            )
        if parts:
            self.fh.write(("\n" if self.n_ann == len(parts) else ",\n") + ",\n".join(parts))

    def close(self) -> None:
        if self.closed:
            return
        self.fh.write('\n], "images": [\n' + ",\n".join(self.images) + "\n]}\n")
        self.fh.close()
        os.replace(self.tmp, self.path)
        self.closed = True

    def abort(self) -> None:
        if not self.closed:
            self.fh.close()
            self.tmp.unlink(missing_ok=True)
            self.closed = True


def synthesize(
    pool: SamplePool,
    out: str | os.PathLike,
    counts: dict[str, int] | None = None,
    *,
    seed: int = 0,
    workers: int = 1,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    allow_missing: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a synthesized set (see module docstring); returns a summary dict."""
    gen = iter_synthesize(
        pool, out, counts, seed=seed, workers=workers, config=config, overwrite=overwrite, allow_missing=allow_missing
    )
    return drain(gen, progress)
