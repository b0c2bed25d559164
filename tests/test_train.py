import json

import numpy as np
import pytest
import torch

from napari_bloodseg.export import add_training_pair
from napari_bloodseg.render import render_smear
from napari_bloodseg.train import (
    CachedDataset,
    RenderedDataset,
    TrainConfig,
    class_weights,
    train,
)


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
    from napari_bloodseg.widgets.train import START_SCRATCH, TrainWidget

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


_CHILD = """
import sys
from napari_bloodseg.train import CachedDataset, RenderedDataset, TrainConfig, train
tr = CachedDataset(RenderedDataset(16, seed=0, size=64))
va = CachedDataset(RenderedDataset(4, seed=1, size=64))
train(tr, va, sys.argv[1], TrainConfig(epochs=50, batch_size=2, width=4, device="cpu"), resume=len(sys.argv) > 2)
"""


def test_resume_after_sigkill_continues_from_the_right_epoch(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from napari_bloodseg.checkpoint import load_checkpoint

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(run)])
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            hist = run / "history.json"
            if hist.is_file() and json.loads(hist.read_text())["epoch"] >= 2:
                break
            time.sleep(0.2)
        time.sleep(0.7)  # somewhere inside the next epoch, perhaps mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    logged = json.loads((run / "history.json").read_text())["epoch"]
    assert logged >= 2
    assert not list(run.glob("*.tmp")) or all(p.name.startswith(".") for p in run.glob("*.tmp"))
    _, info = load_checkpoint(run / "last.safetensors")  # never half-written
    done = info.training["epoch"]  # written first: the kill may fall before the state and the log follow
    assert done in (logged, logged + 1)
    tr = CachedDataset(RenderedDataset(16, seed=0, size=64))
    va = CachedDataset(RenderedDataset(4, seed=1, size=64))
    seen = []
    state = train(tr, va, run, TrainConfig(epochs=done + 1, batch_size=2, width=4, device="cpu"), resume=True,
                  on_progress=lambda ev: seen.append(ev["epoch"]) if ev["kind"] == "epoch" else None)
    assert seen == [done + 1]
    assert [h["epoch"] for h in state.history] == list(range(1, done + 2))


def _ddp_worker(rank: int, world: int, port: int, out: str, q) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    tr = CachedDataset(RenderedDataset(8, seed=0, size=64))
    va = CachedDataset(RenderedDataset(2, seed=1, size=64))
    state = train(tr, va, out, TrainConfig(epochs=2, batch_size=2, width=4, device="cpu"))
    params = torch.cat([p.detach().double().ravel() for p in state.model.parameters()])
    q.put((rank, params.numpy(), state.epoch))
    dist.destroy_process_group()


def test_ddp_two_gloo_processes_agree(tmp_path):
    import socket

    import torch.multiprocessing as tmp_mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = tmp_mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, str(tmp_path / "run"), q)) for r in range(2)]
    for p in procs:
        p.start()
    results = {r: (p, e) for r, p, e in (q.get(timeout=300) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
    assert set(results) == {0, 1}
    (p0, e0), (p1, e1) = results[0], results[1]
    assert e0 == e1 == 2
    assert np.array_equal(p0, p1)
    # and training moved them away from the common initialisation
    from napari_bloodseg.checkpoint import load_checkpoint

    torch.manual_seed(0)
    from napari_bloodseg.model import UNet

    init = torch.cat([p.detach().double().ravel() for p in UNet(width=4).parameters()]).numpy()
    assert not np.allclose(p0, init)
    model, _ = load_checkpoint(tmp_path / "run" / "last.safetensors")  # written once, by rank 0
    assert np.allclose(torch.cat([p.detach().double().ravel() for p in model.parameters()]).numpy(), p0)


def test_train_and_evaluate_cli(tmp_path, capsys):
    from napari_bloodseg.cli import main

    data = tmp_path / "set"
    for i in range(6):
        s = render_smear((96, 96), seed=i)
        add_training_pair(data, s.image, s.mask, f"f{i}", ["train", "train", "train", "val", "test", "test"][i])
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--epochs", "2", "--width", "4", "--batch-size", "2"]) == 0
    assert "best validation mIoU" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(run / "best.safetensors"), "--data", str(data), "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert 0 <= res["pixel_accuracy"] <= 1 and res["items"] == 2
    assert len(res["confusion_matrix"]) == 10 and sum(map(sum, res["confusion_matrix"])) == 2 * 96 * 96
    assert set(res["iou"]) == set(res["dice"]) and "healthy RBC" in res["iou"]
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "ev" / "confusion_matrix.png").ndim == 3
    # test-time augmentation is recorded and scores the same pixels
    assert main(["evaluate", "--model", str(run / "best.safetensors"), "--data", str(data), "--tta", "d4",
                 "--out", str(tmp_path / "ev4")]) == 0
    res4 = json.loads((tmp_path / "ev4" / "evaluation.json").read_text())
    assert res4["tta"] == "d4" and res["tta"] == "none"
    assert sum(map(sum, res4["confusion_matrix"])) == sum(map(sum, res["confusion_matrix"]))
    # a wrong folder is one clear line
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")]) == 2
    assert "expected 'train/' and 'val/'" in capsys.readouterr().err


def test_train_streams_tiles_from_a_bank(tmp_path, capsys):
    """A sample bank as --data: tiles are composed on the fly (train split for training, val split
    for validation), in field-grouped order, and a normal run folder comes out."""
    from test_synth import write_bank

    from napari_bloodseg.cli import main
    from napari_bloodseg.train import _EpochOrder, datasets_for

    bank = write_bank(tmp_path / "bank")
    tr, va = datasets_for(str(bank), bank_tiles=(40, 8))
    assert (len(tr), len(va)) == (40, 8)
    img, mask = tr[0]
    assert img.shape == (224, 224, 3) and mask.shape == (224, 224) and img.dtype == mask.dtype == np.uint8
    order = _EpochOrder(tr)
    first = list(order)
    order.set_epoch(1)
    assert sorted(first) == list(range(40)) and list(order) != first
    run = tmp_path / "run"
    assert main(["train", "--data", str(bank), "--out", str(run), "--epochs", "1", "--width", "4", "--batch-size", "4",
                 "--bank-tiles", "16", "--bank-val-tiles", "4"]) == 0
    hist = json.loads((run / "history.json").read_text())
    assert hist["epoch"] == 1 and (run / "best.safetensors").is_file()
    # a bank lacking validation samples is one clear message
    bank2 = write_bank(tmp_path / "bank2", skip=tuple((c, "val") for c in range(1, 10)))
    assert main(["train", "--data", str(bank2), "--out", str(tmp_path / "r2")]) == 2
    assert "no val-split samples" in capsys.readouterr().err


def test_freeze_encoder_trains_the_decoder_only_and_keeps_the_size_model(tmp_path, tiny_sets):
    from napari_bloodseg.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
    from napari_bloodseg.model import UNet
    from napari_bloodseg.scalehead import fit_head

    tr, va = tiny_sets
    rng = np.random.default_rng(0)
    head = fit_head(rng.normal(size=(64, 8)), rng.uniform(-1, 1, 64), hidden=4, epochs=2)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "init.safetensors", UNet(width=2), ModelInfo(width=2, scale_head=head))
    init, _ = load_checkpoint(tmp_path / "init.safetensors")
    for freeze, run in ((True, "frozen"), (False, "free")):
        cfg = TrainConfig(epochs=1, batch_size=4, width=2, device="cpu", lr=1e-2, init=str(tmp_path / "init.safetensors"),
                          freeze_encoder=freeze)
        train(tr, va, tmp_path / run, cfg)
        model, info = load_checkpoint(tmp_path / run / "last.safetensors")
        before, after = init.state_dict(), model.state_dict()
        enc_same = all(torch.equal(before[k], after[k]) for k in before if k.startswith("down."))
        dec_same = all(torch.equal(before[k], after[k]) for k in before if k.startswith(("up", "head")))
        assert enc_same == freeze and not dec_same, run
        assert (info.scale_head is not None) == freeze, run  # the size model stays valid only on the same encoder


def test_resume_trusts_the_checkpoint_when_stopped_before_the_state_was_written(tmp_path):
    """A stop between writing last.safetensors and state.pt leaves the state one epoch behind."""
    import shutil

    from napari_bloodseg.train import CachedDataset, RenderedDataset, TrainConfig, train

    tr = CachedDataset(RenderedDataset(8, seed=0, size=64))
    va = CachedDataset(RenderedDataset(2, seed=1, size=64))
    run = tmp_path / "run"

    def cfg(epochs):
        return TrainConfig(epochs=epochs, batch_size=2, width=4, device="cpu")

    train(tr, va, run, cfg(1))
    shutil.copy(run / "state.pt", tmp_path / "state_epoch1.pt")
    train(tr, va, run, cfg(2), resume=True)
    shutil.copy(tmp_path / "state_epoch1.pt", run / "state.pt")  # as if killed right after last.safetensors
    seen = []
    state = train(tr, va, run, cfg(3), resume=True,
                  on_progress=lambda ev: seen.append(ev["epoch"]) if ev["kind"] == "epoch" else None)
    assert seen == [3]
    assert [h["epoch"] for h in state.history] == [1, 2, 3]


def test_distillation_on_wbc_classes_lets_the_other_classes_move(tmp_path, tiny_sets):
    from napari_bloodseg.classes import WBC_CLASSES, BloodClass
    from napari_bloodseg.losses import distillation_loss

    wbc = torch.tensor([int(c) for c in WBC_CLASSES])
    teacher = torch.randn(2, 10, 4, 4)
    swapped = teacher.clone()  # RBC and background trade places: no WBC probability changes
    rbc, glass = int(BloodClass.HEALTHY_RBC), int(BloodClass.BACKGROUND)
    swapped[:, [rbc, glass]] = teacher[:, [glass, rbc]]
    assert float(distillation_loss(swapped, teacher)) > 0.01
    assert float(distillation_loss(swapped, teacher, classes=wbc)) == pytest.approx(0.0, abs=1e-6)
    retyped = teacher.clone()
    retyped[:, int(BloodClass.LYMPHOCYTE)] += 3.0  # the WBC type moves: that is paid for
    assert float(distillation_loss(retyped, teacher, classes=wbc)) > 0.01
    tr, va = tiny_sets
    with pytest.raises(ValueError, match="'all' or 'wbc'"):
        train(tr, va, tmp_path / "bad", TrainConfig(epochs=1, width=4, device="cpu", init="x.safetensors",
                                                      distill=1.0, distill_classes="rbc"))


def test_distillation_keeps_the_starting_model_where_labels_say_nothing(tmp_path, tiny_sets):
    from napari_bloodseg.checkpoint import load_checkpoint
    from napari_bloodseg.classes import IGNORE_INDEX, BloodClass
    from napari_bloodseg.losses import distillation_loss

    z = torch.randn(2, 10, 4, 4)
    assert float(distillation_loss(z, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(z, torch.randn(2, 10, 4, 4))) > 0.01
    moved = z.clone()
    moved[:, :, 0, 0] += torch.randn(2, 10)  # the student differs from the teacher at one pixel only
    elsewhere = torch.ones(2, 4, 4, dtype=torch.bool)
    elsewhere[:, 0, 0] = False
    assert float(distillation_loss(moved, z, elsewhere)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(moved, z, ~elsewhere)) > 16 * float(distillation_loss(moved, z)) - 1e-6

    tr, va = tiny_sets
    train(tr, va, tmp_path / "start", TrainConfig(epochs=6, batch_size=4, width=4, device="cpu", lr=1e-2))
    init = str(tmp_path / "start" / "last.safetensors")

    class ClumpOnTheLeft(torch.utils.data.Dataset):
        """The tiny set relabelled: the left half all platelet clump, the right half unlabelled."""

        def __len__(self):
            return len(tr)

        def __getitem__(self, i):
            img, mask = tr[i]
            mask = np.full_like(mask, IGNORE_INDEX)
            mask[:, : mask.shape[1] // 2] = int(BloodClass.PLATELET_CLUMP)
            return img, mask

    x = torch.stack([torch.from_numpy(tr[i][0]).permute(2, 0, 1) for i in range(len(tr))])
    start, info = load_checkpoint(init)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)

    def right_half(model):
        with torch.no_grad():
            return model(((x.float() / 255) - mean) / std).argmax(1)[..., x.shape[-1] // 2:]

    kept = {}
    for weight in (0.0, 1.0):
        cfg = TrainConfig(epochs=4, batch_size=4, width=4, device="cpu", lr=1e-2, init=init, distill=weight,
                          class_weights=(1.0,) * 10)
        train(ClumpOnTheLeft(), va, tmp_path / f"d{weight}", cfg)
        model, _ = load_checkpoint(tmp_path / f"d{weight}" / "last.safetensors")
        kept[weight] = float((right_half(model) == right_half(start)).float().mean())
    # without the pull the unlabelled half turns to clump too; with it the starting map stays
    assert kept[1.0] > kept[0.0] + 0.15, kept
    # the pull on unlabelled pixels only keeps the (unlabelled) right half as well
    cfg = TrainConfig(epochs=4, batch_size=4, width=4, device="cpu", lr=1e-2, init=init, distill=1.0,
                      distill_where="unlabelled", class_weights=(1.0,) * 10)
    train(ClumpOnTheLeft(), va, tmp_path / "dU", cfg)
    model, _ = load_checkpoint(tmp_path / "dU" / "last.safetensors")
    assert float((right_half(model) == right_half(start)).float().mean()) > kept[0.0] + 0.15
    with pytest.raises(ValueError, match="distill needs init"):
        train(tr, va, tmp_path / "bad", TrainConfig(epochs=1, width=4, device="cpu", distill=1.0))
    with pytest.raises(ValueError, match="'all' or 'unlabelled'"):
        train(tr, va, tmp_path / "bad", TrainConfig(epochs=1, width=4, device="cpu", init=init, distill=1.0,
                                                    distill_where="labelled"))
