import json
import pickle

import numpy as np
import pytest
import torch

from napari_bloodseg.checkpoint import (
    DEFAULT_MODEL,
    CheckpointError,
    ModelInfo,
    average_checkpoints,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from napari_bloodseg.classes import NUM_CLASSES
from napari_bloodseg.model import UNet, count_parameters


def test_unet_shapes_and_reference_width():
    model = UNet()
    assert model.width == 32
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sorted({c.out_channels for c in convs}) == [32, 64, 128, 256, 512]
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 4 and all(u.kernel_size == (2, 2) and u.stride == (2, 2) for u in ups)
    out = UNet(width=4)(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, NUM_CLASSES, 224, 224)
    assert count_parameters(UNet(width=8)) < count_parameters(UNet(width=16))


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    torch.manual_seed(1)
    model = UNet(width=4).eval()
    info = ModelInfo(mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), rbc_diameter_px=36.0, training={"epochs": 3})
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, info)
    loaded, info2 = load_checkpoint(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))
    assert info2.width == 4 and info2.training == {"epochs": 3} and info2.mean == (0.5, 0.5, 0.5)
    meta = read_metadata(path)
    assert [c["name"] for c in meta["classes"]][8:] == ["infected RBC", "healthy RBC"]


def test_corrupted_file_gives_one_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, UNet(width=4), ModelInfo())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_foreign_files_are_rejected_without_running_code(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(r'%s', 'w').write('ran')" % (tmp_path / "ran.txt"),))

    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(pickled)
    assert not (tmp_path / "ran.txt").exists()

    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a napari-bloodseg checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_other_class_table_is_rejected(tmp_path):
    from safetensors.torch import save_file

    model = UNet(width=4)
    meta = ModelInfo().to_json()
    meta["classes"][3]["name"] = "band neutrophil"
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"bloodseg": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="class table mismatch"):
        load_checkpoint(path)


def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, UNet(width=4), ModelInfo(training={"run": 1}))
    before = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        save_checkpoint(path, UNet(width=4), ModelInfo(training={"run": 2}))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_default_model_ships_and_loads():
    assert DEFAULT_MODEL.is_file()
    assert DEFAULT_MODEL.stat().st_size <= 20 * 2**20
    model, info = load_checkpoint()
    assert info.rbc_diameter_px > 0 and info.training
    assert (DEFAULT_MODEL.parent / "MODEL_CARD.md").is_file()


def test_averaged_checkpoint_lies_between_the_two_and_drops_the_size_model(tmp_path):
    from napari_bloodseg.scalehead import fit_head

    rng = np.random.default_rng(0)
    head = fit_head(rng.normal(size=(50, 8)), rng.uniform(-1, 1, 50), hidden=4, epochs=2)
    torch.manual_seed(0)
    base, tuned = UNet(width=4), UNet(width=4)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn_like(p))
        for bn in (m for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.fill_(2.0)  # batch-norm statistics are averaged too
            bn.num_batches_tracked.fill_(7)  # counters come from the fine-tuned one
    save_checkpoint(tmp_path / "base.safetensors", base, ModelInfo(width=4, training={"class_weights": [1.0, 2.0]}))
    save_checkpoint(tmp_path / "tuned.safetensors", tuned, ModelInfo(width=4, scale_head=head, training={"class_weights": [3.0, 2.0]}))
    model, info = average_checkpoints(tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", 0.25)
    b, t, m = base.state_dict(), tuned.state_dict(), model.state_dict()
    floats = [k for k in m if m[k].is_floating_point()]
    assert floats and all(torch.allclose(m[k], 0.75 * b[k] + 0.25 * t[k], atol=1e-6) for k in floats)
    assert any(not torch.allclose(m[k], b[k]) for k in floats)
    counters = [k for k in m if k.endswith("num_batches_tracked")]
    assert counters and all(int(m[k]) == 7 for k in counters)
    assert info.scale_head is None  # it read the tuned encoder, which the average changed
    assert info.training["averaged"]["alpha"] == 0.25 and info.training["tuned_training"] == {"class_weights": [3.0, 2.0]}
    assert info.training["class_weights"] == [1.5, 2.0]  # a later fine-tune's loss balance, averaged alike
    save_checkpoint(tmp_path / "avg.safetensors", model, info)
    assert load_checkpoint(tmp_path / "avg.safetensors")[1].scale_head is None
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        average_checkpoints(tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", 1.5)
    save_checkpoint(tmp_path / "wide.safetensors", UNet(width=8), ModelInfo(width=8))
    with pytest.raises(CheckpointError, match="width"):
        average_checkpoints(tmp_path / "wide.safetensors", tmp_path / "tuned.safetensors")
