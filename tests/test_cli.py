import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from napari_bloodseg.classes import CLASS_COLORS
from napari_bloodseg.cli import main
from napari_bloodseg.render import render_smear


def _smear(path, shape, seed=0):
    iio.imwrite(path, render_smear(shape, seed=seed).image)
    return path


def test_segment_odd_sizes_same_size_outputs(tmp_path, tiny_checkpoint):
    a = _smear(tmp_path / "a.png", (100, 100))
    b = _smear(tmp_path / "b.jpg", (1000, 700), seed=1)
    out = tmp_path / "out"
    rc = main(["segment", str(a), str(b), "--out", str(out), "--model", str(tiny_checkpoint), "--rbc-diameter", "36", "-q"])
    assert rc == 0
    for stem, shape in (("a", (100, 100)), ("b", (1000, 700))):
        labels = iio.imread(out / f"{stem}_labels.png")
        color = iio.imread(out / f"{stem}_color.png")
        assert labels.shape == shape and labels.dtype == np.uint8 and labels.max() < 10
        assert color.shape == shape + (3,)
        assert np.array_equal(color, CLASS_COLORS[labels])


def test_segment_folder_and_estimated_diameter(tmp_path, tiny_checkpoint, capsys):
    src = tmp_path / "slides"
    src.mkdir()
    _smear(src / "s1.png", (256, 256))
    _smear(src / "s2.png", (256, 300), seed=2)
    (src / "notes.txt").write_text("not an image")
    rc = main(["segment", str(src), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint)])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["s1_color.png", "s1_labels.png", "s2_color.png", "s2_labels.png"]
    assert "(estimated from" in capsys.readouterr().out


def test_uncertain_diameter_estimate_is_flagged(tmp_path, tiny_checkpoint, capsys):
    img = _smear(tmp_path / "crop.png", (90, 90), seed=1)  # a handful of cells, most cut by the border
    big = _smear(tmp_path / "field.png", (400, 400))  # 14 isolated round RBCs
    assert main(["segment", str(big), "--out", str(tmp_path / "o0"), "--model", str(tiny_checkpoint), "-q"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint), "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "uncertain" in err and "--rbc-diameter" in err
    assert main(["segment", str(img), "--out", str(tmp_path / "o2"), "--model", str(tiny_checkpoint), "-q",
                 "--rbc-diameter", "36"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_bad_inputs_each_get_a_message_and_others_still_run(tmp_path, tiny_checkpoint, capsys):
    good = _smear(tmp_path / "good.png", (128, 128))
    gray = tmp_path / "gray.png"
    iio.imwrite(gray, np.full((64, 64), 200, np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    stack = tmp_path / "stack.tif"
    iio.imwrite(stack, np.zeros((3, 64, 64, 3), np.uint8))
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    rc = main(["segment", str(gray), str(broken), str(good), str(stack), str(missing), "--out", str(out),
               "--model", str(tiny_checkpoint), "--rbc-diameter", "36"])
    err = capsys.readouterr().err
    assert rc == 1
    failed = [l for l in err.splitlines() if l.startswith("bloodseg: failed:")]
    assert len(failed) == 4
    assert any("gray.png" in l and "grayscale" in l for l in failed)
    assert any("broken.png" in l and "not a readable image" in l for l in failed)
    assert any("stack.tif" in l and "one plane" in l for l in failed)
    assert any("missing.png" in l and "no such file" in l for l in failed)
    assert "4 of 5 images failed" in err
    assert "Traceback" not in err
    assert (out / "good_labels.png").is_file()


def test_existing_outputs_are_not_overwritten(tmp_path, tiny_checkpoint, capsys):
    img = _smear(tmp_path / "x.png", (96, 96))
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_labels.png").write_bytes(b"keep me")
    args = ["segment", str(img), "--out", str(out), "--model", str(tiny_checkpoint), "--rbc-diameter", "36", "-q"]
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "x_labels.png").read_bytes() == b"keep me"
    assert main(args + ["--overwrite"]) == 0
    assert iio.imread(out / "x_labels.png").shape == (96, 96)


def test_bad_model_is_one_line(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_text("nope")
    img = _smear(tmp_path / "x.png", (64, 64))
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable napari-bloodseg checkpoint" in err[0]


def test_console_script_runs():
    exe = [sys.executable, "-m", "napari_bloodseg.cli", "segment", "--help"]
    out = subprocess.run(exe, capture_output=True, text=True, check=True).stdout
    for flag in ("--out", "--model", "--device", "--rbc-diameter", "--report"):
        assert flag in out


def test_default_model_via_cli(tmp_path):
    img = _smear(tmp_path / "smear.png", (300, 300), seed=7)
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "-q"]) == 0
    labels = iio.imread(tmp_path / "o" / "smear_labels.png")
    assert (labels == 9).mean() > 0.1  # healthy RBCs found


def test_segment_with_tta(tmp_path, tiny_checkpoint):
    img = _smear(tmp_path / "smear.png", (200, 230), seed=3)
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
                 "--rbc-diameter", "36", "--tta", "flip", "-q"]) == 0
    assert iio.imread(tmp_path / "o" / "smear_labels.png").shape == (200, 230)
