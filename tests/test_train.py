import json

import numpy as np
import pytest
import torch

from napari_bloodseg.export import add_training_pair
from napari_bloodseg.render import render_smear
from napari_bloodseg.train import CachedDataset, RenderedDataset, TrainConfig, class_weights, train


@pytest.fixture(scope="module")
def tiny_sets():
    return CachedDataset(RenderedDataset(8, seed=0, size=64)), CachedDataset(RenderedDataset(4, seed=1, size=64))


def test_class_weights_balance_frequencies():
    w = class_weights(np.array([400, 10, 10, 10, 10, 10, 1, 0, 100, 200]))
    assert w[6] > w[1] > w[8] > w[9] > w[0]
    assert w[7] == w.max()  # absent class gets the largest weight present


def test_tiny_model_overfits_tiny_set(tmp_path):
    tr = CachedDataset(RenderedDataset(4, seed=0, size=64))
    cfg = TrainConfig(epochs=20, batch_size=4, width=8, lr=1e-2, lr_late=3e-3, lr_drop_epoch=15, device="cpu")
    state = train(tr, tr, tmp_path / "run", cfg)
    h = state.history
    assert h[-1]["train_loss"] < 0.6 * h[0]["train_loss"]
    assert max(e["val_accuracy"] for e in h[-5:]) > h[0]["val_accuracy"] + 0.05
    meta = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(meta["history"]) == 20
    from napari_bloodseg.checkpoint import load_checkpoint

    _, info = load_checkpoint(tmp_path / "run" / "best.safetensors")
    t = info.training
    assert {"epoch", "batch_size", "learning_rate", "best_val_accuracy", "lowest_val_loss", "history"} <= set(t)
    assert t["best_val_miou"] == pytest.approx(max(e["val_miou"] for e in h))
    assert [e["lr"] for e in h] == [1e-2] * 15 + [3e-3] * 5


def test_existing_run_is_not_overwritten(tmp_path, tiny_sets):
    tr, va = tiny_sets
    cfg = TrainConfig(epochs=1, batch_size=4, width=2, device="cpu")
    train(tr, va, tmp_path / "run", cfg)
    with pytest.raises(FileExistsError):
        train(tr, va, tmp_path / "run", cfg)


def test_stop_keeps_finished_epochs(tmp_path, tiny_sets):
    tr, va = tiny_sets
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # epoch 1 has 2 steps; stop during epoch 2

    state = train(tr, va, tmp_path / "run", TrainConfig(epochs=5, batch_size=4, width=2, device="cpu"), should_stop=stop)
    assert state.epoch == 1
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_train_widget_runs_and_stops(make_napari_viewer, qtbot, tmp_path):
    from napari_bloodseg._widget_train import START_SCRATCH, TrainWidget

    data = tmp_path / "pairs"
    for i in range(4):
        s = render_smear((96, 96), seed=i)
        add_training_pair(data, s.image, s.mask, f"f{i}", "train" if i < 3 else "val")
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._data.value = str(data)
    w._out.value = str(tmp_path / "run")
    w._start.value = START_SCRATCH
    w._width.value = 4
    w._epochs.value = 200
    w._batch.value = 2
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: len(w.history) >= 1, timeout=120_000)
    w._stop.clicked.emit()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert 1 <= len(w.history) < 200
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert w._plot.losses and "best mIoU" in w._status.value
    assert w._run.enabled
