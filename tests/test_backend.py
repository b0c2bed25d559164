"""Backends (torch, OpenVINO) and the pipelined batch run."""

import json
import sys
import threading
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from napari_bloodseg.checkpoint import ModelInfo
from napari_bloodseg.cli import main
from napari_bloodseg.infer import Backend, Segmenter, resolve_backend
from napari_bloodseg.model import UNet
from napari_bloodseg.pipeline import WarningsByKey, prefetch
from napari_bloodseg.render import render_smear

INSTALL = "pip install 'napari-bloodseg[openvino]'"


@pytest.fixture(scope="module")
def tiny_model() -> tuple[UNet, ModelInfo]:
    """An untrained width-4 U-Net with non-trivial batch-norm statistics (as after training)."""
    torch.manual_seed(0)
    model = UNet(width=4).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model, ModelInfo(width=4)


@pytest.fixture
def no_openvino(monkeypatch):
    """OpenVINO as if not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "openvino", None)


def test_openvino_agrees_with_torch_fp32(tiny_model):
    pytest.importorskip("openvino")
    model, info = tiny_model
    ref = Segmenter(model, info, "cpu", fast=False, precision="fp32", backend="torch")
    ov = Segmenter(model, info, "cpu", backend="openvino", precision="fp32")
    assert ov.backend is Backend.OPENVINO and ov.backend_text == "openvino fp32"
    img = render_smear((300, 260), seed=9).image
    a, b = ref.segment(img, rbc_diameter=36.0), ov.segment(img, rbc_diameter=36.0)
    assert b.labels.shape == a.labels.shape == img.shape[:2] and b.labels.dtype == a.labels.dtype == np.uint8
    assert (a.labels == b.labels).mean() >= 0.999
    assert b.backend == "openvino fp32" and a.backend == "torch fp32"
    tiles = np.stack([img[:224, :224], img[-224:, -224:]])
    pa, pb = ref.predict_tiles(tiles), ov.predict_tiles(tiles)
    assert pb.shape == pa.shape == (2, 10, 224, 224) and pb.dtype == pa.dtype == np.float32
    assert np.abs(pa - pb).max() < 1e-3


@pytest.mark.parametrize("tile, shape", [(256, (600, 420)), (1024, (1100, 700))])
def test_openvino_large_tiles_agree_with_torch_fp32(tiny_model, tile, shape):
    """Tiles larger than the training size (non-square, one OpenVINO model for every shape) give
    the labels of torch fp32 at the same tiles."""
    pytest.importorskip("openvino")
    model, info = tiny_model
    ref = Segmenter(model, info, "cpu", fast=False, precision="fp32", backend="torch", tile=tile)
    ov = Segmenter(model, info, "cpu", tile=tile)
    img = render_smear(shape, seed=11).image
    a, b = ref.segment(img, rbc_diameter=36.0), ov.segment(img, rbc_diameter=36.0)
    assert b.labels.shape == a.labels.shape == shape and b.labels.dtype == a.labels.dtype == np.uint8
    assert b.confidence.shape == shape and b.confidence.dtype == np.uint8
    assert (a.labels == b.labels).mean() >= 0.999
    assert np.abs(a.confidence.astype(int) - b.confidence).max() <= 2


def test_openvino_normalises_uint8_tiles_itself_and_compiles_logits_on_first_use(tiny_model):
    """Plain segmentation hands uint8 tiles to a model with the normalisation and softmax inside;
    the logits model (test-time augmentation, evaluate) is compiled only when first called."""
    pytest.importorskip("openvino")
    model, info = tiny_model
    ov = Segmenter(model, info, "cpu", backend="openvino")
    ref = Segmenter(model, info, "cpu", fast=False, precision="fp32", backend="torch")
    tiles = np.stack([render_smear((224, 320), seed=s).image for s in (3, 4)])
    assert ov.model._request is None  # no logits model yet
    p = ov.predict_tiles(tiles)
    assert p.shape == (2, 10, 224, 320) and p.dtype == np.float32 and np.allclose(p.sum(1), 1, atol=1e-4)
    assert np.abs(p - ref.predict_tiles(tiles)).max() < 1e-3
    assert ov.model._request is None
    with torch.inference_mode():
        logits = ov.model(ref.network_input(tiles))
    assert np.abs(torch.softmax(logits, 1).numpy() - p).max() < 1e-3


def test_openvino_tta_goes_through_the_same_averaging(tiny_model):
    pytest.importorskip("openvino")
    model, info = tiny_model
    tiles = render_smear((224, 224), seed=2).image[None]
    plain = Segmenter(model, info, "cpu", backend="openvino").predict_tiles(tiles)
    for tta in ("flip", "d4"):
        ov = Segmenter(model, info, "cpu", backend="openvino", tta=tta).predict_tiles(tiles)
        ref = Segmenter(model, info, "cpu", backend="torch", precision="fp32", fast=False, tta=tta).predict_tiles(tiles)
        assert np.abs(ov - ref).max() < 1e-3
        assert np.abs(ov - plain).max() > 1e-3  # averaged over the transforms, not the plain pass
        assert np.allclose(ov.sum(1), 1, atol=1e-4)


def test_compiled_once_per_checkpoint(tiny_checkpoint):
    pytest.importorskip("openvino")
    a = Segmenter.from_file(tiny_checkpoint, device="cpu", backend="openvino")
    b = Segmenter.from_file(tiny_checkpoint, device="cpu", backend="openvino", tta="flip")
    assert a.model.compiled is b.model.compiled  # loaded twice, converted and compiled once


def test_auto_backend(tiny_model, monkeypatch):
    openvino = pytest.importorskip("openvino")
    from napari_bloodseg import infer

    cpu = torch.device("cpu")
    monkeypatch.setattr(infer, "cpu_has_amx", lambda: False)
    assert resolve_backend("auto", cpu) is Backend.OPENVINO
    assert resolve_backend("auto", cpu, fast=False) is Backend.TORCH  # the naive reference path stays torch
    assert resolve_backend("auto", torch.device("cuda")) is Backend.TORCH
    assert resolve_backend("torch", cpu) is Backend.TORCH
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))
    model, info = tiny_model
    # a CPU with AMX: torch's bf16 is the faster path, unless fp32 is asked for
    monkeypatch.setattr(infer, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(infer, "cpu_has_native_bf16", lambda: True)
    assert resolve_backend("auto", cpu) is Backend.TORCH
    assert resolve_backend("auto", cpu, precision="fp32") is Backend.OPENVINO
    assert resolve_backend("openvino", cpu) is Backend.OPENVINO  # asked for by name: always OpenVINO
    amx = Segmenter(model, info, "cpu")
    assert amx.backend is Backend.TORCH and amx.backend_text == "torch bf16"
    monkeypatch.setattr(infer, "cpu_has_amx", lambda: False)
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert resolve_backend("auto", cpu) is Backend.TORCH
    assert Segmenter(model, info, "cpu").backend is Backend.TORCH
    monkeypatch.setitem(sys.modules, "openvino", openvino)
    assert Segmenter(model, info, "cpu").backend is Backend.OPENVINO


def test_invalid_backend_lists_the_allowed_values(tiny_model):
    model, info = tiny_model
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; allowed: auto, torch, openvino"):
        Segmenter(model, info, "cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="allowed: auto, torch, openvino"):
        resolve_backend("onnx", torch.device("cpu"))


def test_openvino_missing_is_one_clear_error(tiny_model, no_openvino):
    model, info = tiny_model
    with pytest.raises(ValueError, match="not installed"):
        Segmenter(model, info, "cpu", backend="openvino")


def test_cli_openvino_missing_is_one_line(tmp_path, tiny_checkpoint, no_openvino, capsys):
    iio.imwrite(tmp_path / "a.png", render_smear((96, 96), seed=0).image)
    rc = main(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
               "--backend", "openvino", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("bloodseg: error:") and "openvino" in err[0] and INSTALL in err[0]
    rc = main(["evaluate", "--model", str(tiny_checkpoint), "--data", "procedural", "--procedural-tiles", "2",
               "--backend", "openvino"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("bloodseg: error:") and INSTALL in err[0]
    with pytest.raises(SystemExit) as e:
        main(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--backend", "tensorrt"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_evaluate_with_openvino_matches_torch(tmp_path, tiny_checkpoint, capsys):
    pytest.importorskip("openvino")
    results = {}
    for backend in ("torch", "openvino"):
        out = tmp_path / backend
        assert main(["evaluate", "--model", str(tiny_checkpoint), "--data", "procedural", "--procedural-tiles", "3",
                     "--backend", backend, "--tta", "flip", "--out", str(out)]) == 0
        results[backend] = json.loads((out / "evaluation.json").read_text())
    assert results["openvino"]["backend"] == "openvino" and results["torch"]["backend"] == "torch"
    cm_t, cm_o = np.array(results["torch"]["confusion_matrix"]), np.array(results["openvino"]["confusion_matrix"])
    assert np.abs(cm_t - cm_o).sum() <= 0.002 * cm_t.sum()


def test_batch_run_same_as_one_by_one(tmp_path, tiny_checkpoint, capsys):
    src = tmp_path / "slides"
    src.mkdir()
    images = {f"s{i}": render_smear((200 + 40 * i, 230), seed=i).image for i in range(3)}
    for stem, img in images.items():
        iio.imwrite(src / f"{stem}.png", img)
    out = tmp_path / "o"
    assert main(["segment", str(src), "--out", str(out), "--model", str(tiny_checkpoint), "--rbc-diameter", "30",
                 "--report"]) == 0
    cap = capsys.readouterr()
    assert [line.split(":")[0] for line in cap.out.splitlines()[:3]] == ["s0.png", "s1.png", "s2.png"]
    seg = Segmenter.from_file(tiny_checkpoint, device="cpu")
    for stem, img in images.items():
        alone = seg.segment(img, rbc_diameter=30.0).labels
        assert np.array_equal(iio.imread(out / f"{stem}_labels.png"), alone)
        summary = json.loads((out / f"{stem}_summary.json").read_text())
        assert summary["backend"] == seg.backend_text


def test_prefetch_keeps_order_and_errors():
    started = []

    def load(x: int) -> int:
        started.append(x)
        if x == 2:
            raise ValueError("bad 2")
        return x * 10

    got = []
    for x, fut in prefetch(range(5), load):
        try:
            got.append(fut.result())
        except ValueError as e:
            got.append(str(e))
    assert got == [0, 10, "bad 2", 30, 40] and started == [0, 1, 2, 3, 4]


def test_warnings_filed_under_their_input_from_any_thread():
    caught = WarningsByKey()

    def worker():
        with caught.under("b.png"):
            warnings.warn("from the loader thread")

    with caught:
        t = threading.Thread(target=worker)
        t.start()
        with caught.under("a.png"):
            warnings.warn("from the main thread")
        t.join()
        assert caught.pop("a.png") == ["from the main thread"]
        assert caught.pop("b.png") == ["from the loader thread"]
        assert caught.pop("b.png") == []


def test_widget_backend_without_openvino_is_a_notification(make_napari_viewer, qtbot, tiny_checkpoint,
                                                           no_openvino, monkeypatch):
    from napari_bloodseg.widgets import segment as _widget_segment
    from napari_bloodseg.widgets.segment import SegmentWidget

    shown = []
    monkeypatch.setattr(_widget_segment, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(render_smear((96, 96), seed=0).image, name="smear", rgb=True)
    widget = SegmentWidget(viewer)
    widget._model.value = str(tiny_checkpoint)
    assert widget._backend.choices == ("auto", "torch", "openvino")
    widget._backend.value = "openvino"
    widget._run.clicked.emit()
    assert widget.worker is None and len(shown) == 1 and INSTALL in shown[0]
    assert "not installed" in widget._status.value
