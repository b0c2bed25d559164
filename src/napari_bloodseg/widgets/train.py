"""Train widget: a synthesized set or corrected pairs, epochs, device, start model; runs in a worker
with a live loss/accuracy plot, progress, and a Stop button that keeps the best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, PushButton, SpinBox
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from .utils import Collapsible, StatusLine, WorkerDock, chosen_path, compact, path_edit

if TYPE_CHECKING:
    import napari

START_DEFAULT = "shipped default model"
START_SCRATCH = "new model (random)"
START_FILE = "checkpoint file"


@thread_worker(ignore_errors=True)
def _train_worker(data: str, out: str, epochs: int, batch_size: int, device: str, init: str | None, width: int):
    import queue

    from ..train import TrainConfig, datasets_for, train

    events: queue.SimpleQueue = queue.SimpleQueue()
    stop = {"flag": False}
    train_set, val_set = datasets_for(data, augment=True)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, device=device, init=init, width=width,
                      lr_drop_epoch=min(5, max(1, epochs // 2)))
    # train() runs here; progress events are yielded to the main thread as they come
    import threading

    result: dict = {}

    def run():
        try:
            result["state"] = train(train_set, val_set, out, cfg, on_progress=events.put, should_stop=lambda: stop["flag"])
        except BaseException as e:  # handed to the main thread below
            result["error"] = e
        events.put(None)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    while True:
        ev = events.get()
        if ev is None:
            break
        cmd = yield ev
        if cmd == "stop":
            stop["flag"] = True
    t.join()
    if "error" in result:
        raise result["error"]
    return result["state"]


class TrainWidget(WorkerDock, Container):
    _task = "Training"

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self._viewer = napari_viewer
        self._data = path_edit("training data", "d", "A set from Synthesize / `bloodseg synth` (train/ and val/ inside), "
                               "a folder of corrected pairs from 'Add to training set', or a sample bank "
                               "(2,000 tiles per epoch composed on the fly from its cells)")
        self._out = path_edit("run folder", "d", "Where checkpoints (best, last) and history are written; must be new or empty")
        self._epochs = SpinBox(label="epochs", value=5, min=1, max=1000)
        self._batch = SpinBox(label="batch size", value=8, min=1, max=256, tooltip="224x224 tiles per step")
        self._device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self._start = ComboBox(label="start from", choices=[START_DEFAULT, START_SCRATCH, START_FILE], value=START_DEFAULT,
                               tooltip="Fine-tune the shipped model (quick, few images) or train a new one")
        self._init = path_edit("checkpoint", "r", "Checkpoint to start from", filter="*.safetensors")
        self._init.visible = False
        self._width = SpinBox(label="width", value=32, min=2, max=128, visible=False,
                              tooltip="First-level channels of a new U-Net (32 = the reference; 8-16 train fast on a CPU)")
        self._run = PushButton(text="Train")
        self._stop = self._stop_button = PushButton(text="Stop (keep best)", enabled=False)
        self._status = StatusLine()
        self._advanced = Collapsible(
            [self._batch, self._device],
            tooltip="Batch size and the device that trains: the defaults suit most runs",
        )
        self.extend([self._data, self._out, self._epochs, self._start, self._init, self._width, self._advanced,
                     self._run, self._stop, self._status])
        compact(self)
        self._start.changed.connect(self._on_start_changed)
        self._run.changed.connect(self.run)
        self._stop.changed.connect(self.stop)
        self.history: list[dict] = []
        self._plot = _LivePlot()
        self.native.layout().addWidget(self._plot.canvas)

    def _on_start_changed(self, value: str) -> None:
        self._init.visible = value == START_FILE
        self._width.visible = value == START_SCRATCH

    def run(self) -> None:
        from ..checkpoint import DEFAULT_MODEL

        data, out = chosen_path(self._data), chosen_path(self._out)
        if data is None or not data.is_dir():
            show_error("Choose the training data folder.")
            return
        if out is None:
            show_error("Choose a run folder for the checkpoints.")
            return
        if Path(out).is_dir() and any(Path(out).iterdir()):
            show_error(f"{out} is not empty: choose a new run folder (nothing is overwritten).")
            return
        init, width = None, int(self._width.value)
        if self._start.value == START_DEFAULT:
            init = str(DEFAULT_MODEL)
        elif self._start.value == START_FILE:
            init = str(chosen_path(self._init))
            if not Path(init).is_file():
                show_error(f"Checkpoint not found: {init}")
                return
        self.history = []
        self._plot.clear()
        worker = _train_worker(str(data), str(out), int(self._epochs.value), int(self._batch.value), self._device.value, init, width)
        self._launch(worker, progress(total=int(self._epochs.value), desc="Training"), "preparing data…",
                     self._on_event, self._on_done)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.send("stop")
            self._status.value = "stopping after saving the best checkpoint…"

    def _on_event(self, ev: dict) -> None:
        if ev["kind"] == "batch":
            self._status.value = f"epoch {ev['epoch'] + 1}: step {ev['step']}/{ev['steps']}, loss {ev['loss']:.3f}"
            self._plot.add_batch(ev["loss"])
        else:
            self.history.append(ev)
            self._plot.add_epoch(ev)
            if self._pbar is not None:
                self._pbar.update(1)
            self._status.value = (f"epoch {ev['epoch']}: val accuracy {ev['val_accuracy']:.3f}, mIoU {ev['val_miou']:.3f}"
                                  + (" (best)" if ev["improved"] else ""))

    def _on_done(self, state) -> None:
        out = chosen_path(self._out)
        best = out / "best.safetensors"
        if best.is_file():
            self._status.value = f"done: {state.epoch} epochs, best mIoU {state.best_miou:.3f} → {best}"
            show_info(f"Training finished; best checkpoint: {best}")
        else:
            self._status.value = "stopped before the first epoch finished: no checkpoint written"



class _LivePlot:
    """Batch loss and per-epoch validation accuracy in one small matplotlib canvas."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtWidgets import QSizePolicy

        self.fig = Figure(figsize=(3.2, 2.2), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.fig)
        self.canvas.setMinimumHeight(180)
        self.canvas.setMinimumWidth(160)  # takes the dock's width, never widens it
        self.canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.ax = self.fig.add_subplot(111)
        self.ax2 = self.ax.twinx()
        self.clear()

    def clear(self) -> None:
        self.losses: list[float] = []
        self.epochs: list[tuple[int, float]] = []
        self._draw()

    def add_batch(self, loss: float) -> None:
        self.losses.append(loss)
        if len(self.losses) % 5 == 0:
            self._draw()

    def add_epoch(self, ev: dict) -> None:
        self.epochs.append((len(self.losses), ev["val_accuracy"]))
        self._draw()

    def _draw(self) -> None:
        self.ax.clear()
        self.ax2.clear()
        self.ax.plot(self.losses, color="tab:blue", lw=0.8)
        self.ax.set_xlabel("step")
        self.ax.set_ylabel("loss", color="tab:blue")
        if self.epochs:
            x, y = zip(*self.epochs)
            self.ax2.plot(x, y, "o-", color="tab:red", ms=3)
        self.ax2.set_ylabel("val accuracy", color="tab:red")
        self.ax2.set_ylim(0, 1)
        self.canvas.draw_idle()
