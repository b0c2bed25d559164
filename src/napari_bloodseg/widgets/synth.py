"""Synthesize widget: compose a training set from a sample bank (or procedural sprites) in a worker
thread, with progress and cancel, then preview a few of its tiles as image + class labels layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox, Container, PushButton, SpinBox
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from .utils import (
    Collapsible,
    StatusLine,
    WorkerDock,
    chosen_path,
    compact,
    path_edit,
    show_progress,
)

if TYPE_CHECKING:
    import napari


@thread_worker
def _synth_worker(bank: str | None, per_class: int, out: str, counts: dict, seed: int, workers: int,
                  overwrite: bool, allow_missing: bool, preview: int):
    from ..synth import SamplePool, iter_synthesize, read_synth_set

    pool = SamplePool.procedural(per_class, seed=seed) if bank is None else SamplePool.from_bank_dir(bank)
    summary = yield from iter_synthesize(pool, out, counts, seed=seed, workers=workers,
                                         overwrite=overwrite, allow_missing=allow_missing)
    layers = []
    if preview > 0:
        first = next(sp for sp, n in counts.items() if n > 0)
        layers = read_synth_set(Path(out) / first, max_images=preview)
    return summary, layers


class SynthWidget(WorkerDock, Container):
    _task = "Synthesis"

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self._viewer = napari_viewer
        self._bank = path_edit("sample bank", "d",
                               "Bank folder (manifest.csv + one RGBA PNG per cell), e.g. from `bloodseg bank import`")
        self._procedural = CheckBox(text="procedural sprites (no bank)", value=False,
                                    tooltip="Use rendered cells instead of a bank: a quick start without data")
        self._per_class = SpinBox(label="sprites per class", value=16, min=1, max=500, enabled=False,
                                  tooltip="Procedural sprites rendered per class and split")
        self._out = path_edit("output folder", "d", "New or empty folder for the set")
        self._train = SpinBox(label="train images", value=200, min=0, max=10_000_000)
        self._val = SpinBox(label="val images", value=40, min=0, max=10_000_000)
        self._test = SpinBox(label="test images", value=40, min=0, max=10_000_000)
        self._seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1, tooltip="Same seed → identical set")
        self._workers = SpinBox(label="worker processes", value=min(os.cpu_count() or 1, 4), min=1, max=64,
                                tooltip="Parallel processes; the output does not depend on it")
        self._allow_missing = CheckBox(text="allow missing classes", value=False,
                                       tooltip="Synthesize even if the bank lacks some classes in some splits")
        self._overwrite = CheckBox(text="replace an earlier set", value=False,
                                   tooltip="Replace a set synthesized earlier in the output folder "
                                   "(only its split folders and synth.json are removed)")
        self._preview = SpinBox(label="preview tiles", value=8, min=0, max=256,
                                tooltip="Tiles of the first split shown as layers when done")
        self._run = PushButton(text="Synthesize")
        self._cancel = self._stop_button = PushButton(text="Cancel", enabled=False)
        self._status = StatusLine()
        self._advanced = Collapsible(
            [self._seed, self._workers, self._allow_missing, self._preview],
            tooltip="Random seed, worker processes, missing classes and the preview: the defaults suit most sets",
        )
        self.extend([self._bank, self._procedural, self._per_class, self._out, self._train, self._val, self._test,
                     self._overwrite, self._advanced, self._run, self._cancel, self._status])
        compact(self)
        self._procedural.changed.connect(self._on_procedural)
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        self._cancelled = False

    def _on_procedural(self, value: bool) -> None:
        self._bank.enabled = not value
        self._per_class.enabled = value

    def run(self) -> None:
        bank = None
        if not self._procedural.value:
            chosen = chosen_path(self._bank)
            bank = None if chosen is None else str(chosen)
            if bank is None or not Path(bank).is_dir():
                show_error("Choose a sample bank folder, or tick 'procedural sprites'.")
                return
        chosen_out = chosen_path(self._out)
        if chosen_out is None:
            show_error("Choose an output folder.")
            return
        out = str(chosen_out)
        counts = {"train": int(self._train.value), "val": int(self._val.value), "test": int(self._test.value)}
        if not any(counts.values()):
            show_error("Nothing to synthesize: all image counts are 0.")
            return
        from ..synth import check_output

        try:
            check_output(out, bool(self._overwrite.value))
        except FileExistsError as e:
            msg = str(e).replace("pass --overwrite", "tick 'replace an earlier set'")
            self._status.value = f"error: {msg}"
            show_error(msg)
            return
        self._start(bank, out, counts)

    def _start(self, bank: str | None, out: str, counts: dict) -> None:
        worker = _synth_worker(bank, int(self._per_class.value), out, counts, int(self._seed.value),
                               int(self._workers.value), bool(self._overwrite.value), bool(self._allow_missing.value),
                               int(self._preview.value), _ignore_errors=True)  # errors → _on_error
        self._cancelled = False
        self._launch(worker, progress(total=sum(counts.values()), desc="Synthesizing"), "starting…",
                     self._on_progress, self._on_result)

    def cancel(self) -> None:
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            self._status.value = "cancelled (the output folder is incomplete)"

    def _on_progress(self, value: tuple[int, int]) -> None:
        done, total = value
        if self._cancelled:  # progress queued before the cancel
            return
        show_progress(self._pbar, done, total)
        self._status.value = f"image {done}/{total}"

    def _on_result(self, result) -> None:
        summary, layers = result
        for data, kwargs, kind in layers:
            if kind == "image":
                self._viewer.add_image(data, **kwargs)
            else:
                self._viewer.add_labels(data, **kwargs)
        msg = f"done: {summary['images']} images in {summary['seconds']:.1f} s → {summary['out']}"
        self._status.value = msg
        show_info(msg)

