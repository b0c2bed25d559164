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
    cap = capsys.readouterr()
    assert "(estimated from" in cap.out + cap.err  # an uncertain estimate is a warning line on stderr


def test_uncertain_diameter_estimate_is_flagged(tmp_path, tiny_checkpoint, capsys):
    img = _smear(tmp_path / "crop.png", (90, 90), seed=1)  # a handful of cells, most cut by the border
    big = _smear(tmp_path / "field.png", (400, 400))  # 14 isolated round RBCs
    assert main(["segment", str(big), "--out", str(tmp_path / "o0"), "--model", str(tiny_checkpoint), "-q",
                 "--scale-method", "classical"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint), "-q",
                 "--scale-method", "classical"]) == 0
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


def _options(parser, path=()):
    """(command path, action) of every option of every (sub)command."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, path + (name,))
        elif action.option_strings and action.dest not in ("help", "version"):
            yield path, action


def test_every_option_says_what_it_means_and_its_default():
    import argparse

    from napari_bloodseg.cli import build_parser

    seen = set()
    for path, action in _options(build_parser()):
        seen.add(path)
        name = f"bloodseg {' '.join(path)} {action.option_strings[-1]}"
        if action.help == argparse.SUPPRESS:
            continue
        assert action.help and len(action.help) > 10, f"{name} has no help"
        if action.default not in (None, False) and not action.required:
            assert "%(default)s" in action.help or "default: " in action.help, f"{name} does not give its default"
    assert {("segment",), ("bank", "import"), ("bank", "procedural"), ("bank", "clumps"), ("bank", "gallery"),
            ("synth",), ("train",), ("evaluate",)} <= seen
    help_text = subprocess.run([sys.executable, "-m", "napari_bloodseg.cli", "bank", "procedural", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "cells rendered per class" in help_text and "(default: 20)" in help_text and "random seed" in help_text


def test_run_summary_over_a_folder(tmp_path, capsys):
    import csv
    import json

    src = tmp_path / "slide"
    src.mkdir()
    _smear(src / "f1.png", (300, 300), seed=1)
    _smear(src / "f2.png", (300, 260), seed=2)
    out = tmp_path / "out"
    args = ["segment", str(src), "--out", str(out), "--rbc-diameter", "36", "--report"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "run summary" in stdout and "95 % CI" in stdout
    run = json.loads((out / "summary.json").read_text())
    per_image = [json.loads((out / f"f{i}_summary.json").read_text()) for i in (1, 2)]
    assert [r["image"] for r in run["images"]] == ["f1.png", "f2.png"]
    t = run["total"]
    assert t["images"] == 2 and t["rbc_total"] == sum(s["rbc_total"] for s in per_image) > 0
    assert t["wbc_total"] == sum(s["wbc_total"] for s in per_image)
    assert t["rbc_whole"] == sum(s["rbc_whole"] for s in per_image) <= t["rbc_total"]
    assert [r["rbc_whole"] for r in run["images"]] == [s["rbc_whole"] for s in per_image]
    assert t["infected_rbc"] == sum(s["infected_rbc"] for s in per_image)
    lo, hi = t["parasitemia_ci95_percent"]
    assert lo <= t["parasitemia_percent"] <= hi and hi - lo > 1  # a few hundred RBCs: a wide interval
    assert any("fewer than 100 WBCs" in f for f in t["flags"]) and any("1,000 RBCs" in f for f in t["flags"])
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["image"] for r in rows] == ["f1.png", "f2.png", "TOTAL"]
    assert int(rows[-1]["wbc_total"]) == t["wbc_total"] and "WBC" in rows[-1]["flags"]
    assert int(rows[-1]["rbc_whole"]) == t["rbc_whole"]
    # nothing is replaced without --overwrite; with it, the same folder gives the same report
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").unlink()
    (out / "summary.csv").write_text("mine")
    assert main(args) == 2
    assert "summary.csv already exists" in capsys.readouterr().err and (out / "summary.csv").read_text() == "mine"
    assert not (out / "summary.json").exists()  # refused before any work
    assert main(args + ["--overwrite", "-q"]) == 0
    assert (out / "summary.json").read_bytes() == before
    assert capsys.readouterr().out == ""  # --quiet: no per-image lines


def test_uncertain_scale_is_one_line_per_image(tmp_path, tiny_checkpoint, capsys):
    img = _smear(tmp_path / "crop.png", (90, 90), seed=1)
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint), "--report",
                 "--scale-method", "classical"]) == 0
    cap = capsys.readouterr()
    lines = [l for l in (cap.out + cap.err).splitlines() if "crop.png" in l]
    assert len(lines) == 1 and lines[0].startswith("bloodseg: warning:") and "uncertain" in lines[0], lines


def test_non_finite_pixels_are_one_warning_line(tmp_path, tiny_checkpoint, capsys):
    img = render_smear((96, 96), seed=0).image.astype(np.float32) / 255
    img[:3, :4] = np.nan
    img[10, 10, 1] = np.inf
    iio.imwrite(tmp_path / "nan.tif", img)
    args = ["segment", str(tmp_path / "nan.tif"), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
            "--rbc-diameter", "36", "-q"]
    assert main(args) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [l for l in err if "NaN" in l]
    assert len(warned) == 1 and warned[0].startswith("bloodseg: warning:") and "nan.tif" in warned[0]
    assert "13 of 9216 pixels" in warned[0] and "set to 0" in warned[0]
    assert iio.imread(tmp_path / "o" / "nan_labels.png").shape == (96, 96)


def test_pixel_size_gives_the_rbc_diameter(tmp_path, tiny_checkpoint):
    import json

    img = _smear(tmp_path / "f.png", (120, 120))
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint), "-q",
                 "--pixel-size", "0.25", "--report"]) == 0
    summary = json.loads((tmp_path / "o" / "f_summary.json").read_text())
    assert summary["rbc_diameter_px"] == pytest.approx(30.0) and summary["rbc_diameter_method"].startswith("pixel size")


def test_the_pixel_size_stored_in_a_tiff_gives_the_rbc_diameter(tmp_path, tiny_checkpoint):
    import json

    import tifffile

    from napari_bloodseg.io import read_pixel_size
    from napari_bloodseg.render import render_smear

    rgb = render_smear((120, 120), seed=2).image
    tifffile.imwrite(tmp_path / "cm.tif", rgb, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "ome.ome.tif", rgb, ome=True, metadata={"axes": "YXS", "PhysicalSizeX": 0.3,
                                                                          "PhysicalSizeXUnit": "µm"})
    tifffile.imwrite(tmp_path / "scan.tif", rgb, resolution=(72, 72), resolutionunit="INCH")  # a scanner's dpi
    assert read_pixel_size(tmp_path / "cm.tif") == pytest.approx(0.25)
    assert read_pixel_size(tmp_path / "ome.ome.tif") == pytest.approx(0.3)
    assert read_pixel_size(tmp_path / "scan.tif") is None and read_pixel_size(tmp_path / "nothing.tif") is None
    assert main(["segment", str(tmp_path / "cm.tif"), str(tmp_path / "scan.tif"), "--out", str(tmp_path / "o"),
                 "--model", str(tiny_checkpoint), "-q", "--report", "--scale-method", "classical"]) == 0
    cm = json.loads((tmp_path / "o" / "cm_summary.json").read_text())
    assert cm["rbc_diameter_px"] == pytest.approx(30.0) and cm["rbc_diameter_method"] == "pixel size 0.25 µm (file)"
    scan = json.loads((tmp_path / "o" / "scan_summary.json").read_text())
    assert scan["rbc_diameter_method"] == "classical"
    # a diameter on the command line wins over the file's
    assert main(["segment", str(tmp_path / "cm.tif"), "--out", str(tmp_path / "o2"), "--model", str(tiny_checkpoint),
                 "-q", "--report", "--rbc-diameter", "40"]) == 0
    assert json.loads((tmp_path / "o2" / "cm_summary.json").read_text())["rbc_diameter_px"] == pytest.approx(40.0)


def test_segment_tightens_wbcs_unless_the_raw_map_is_asked_for(tmp_path):
    from napari_bloodseg.classes import WBC_CLASSES, BloodClass
    from napari_bloodseg.infer import PLATELET_MIN_PROB, WBC_MIN_PROB, Segmenter
    from napari_bloodseg.postprocess import tighten_wbcs

    img = tmp_path / "smear.png"
    iio.imwrite(img, render_smear((360, 360), seed=4, counts={3: 1, 4: 1, 5: 1}).image)  # three WBCs
    for flag, out in (([], "tight"), (["--raw-map"], "raw")):  # the shipped model: it draws WBCs
        assert main(["segment", str(img), "--out", str(tmp_path / out), "--rbc-diameter", "36", "-q", *flag]) == 0
    raw = iio.imread(tmp_path / "raw" / "smear_labels.png")
    tight = iio.imread(tmp_path / "tight" / "smear_labels.png")
    wbc = np.isin(raw, [int(c) for c in WBC_CLASSES])
    platelet = np.isin(raw, [int(BloodClass.THROMBOCYTE), int(BloodClass.PLATELET_CLUMP)])
    assert wbc.any() and not np.array_equal(raw, tight)
    # the tightening: the WBC- and platelet-probability thresholds, then the opening and rim of
    # postprocess.tighten_wbcs
    sure = Segmenter.from_file(None, device="cpu", tighten_wbcs=False, wbc_min_prob=WBC_MIN_PROB,
                               platelet_min_prob=PLATELET_MIN_PROB)
    thresholded = sure.segment(iio.imread(img), rbc_diameter=36.0).labels
    assert not np.array_equal(raw, thresholded) and np.array_equal(tight, tighten_wbcs(thresholded, 36.0))
    assert np.array_equal(raw[~wbc & ~platelet], tight[~wbc & ~platelet])  # only WBC and platelet pixels change


def test_shared_scale_segments_every_image_at_the_median_estimate(tmp_path, tiny_checkpoint, capsys):
    import json

    import tifffile

    from napari_bloodseg.infer import Segmenter

    src = tmp_path / "run"
    src.mkdir()
    for i, d in enumerate((30.0, 36.0, 44.0)):  # one magnification would agree; the median is what counts
        iio.imwrite(src / f"f{i}.png", render_smear((300, 300), rbc_diameter=d, seed=i).image)
    tifffile.imwrite(src / "own.tif", render_smear((120, 120), seed=5).image, resolution=(1e4 / 0.25, 1e4 / 0.25),
                     resolutionunit="CENTIMETER")
    seg = Segmenter.from_file(tiny_checkpoint, device="cpu")
    est = sorted(seg.estimate_rbc_diameter(iio.imread(src / f"f{i}.png"))[0] for i in range(3))
    assert main(["segment", str(src), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint), "--report",
                 "--shared-scale"]) == 0
    out = capsys.readouterr().out
    assert f"RBC diameter {est[1]:.1f} px for every image: median of 3 images' estimates" in out
    for i in range(3):
        s = json.loads((tmp_path / "o" / f"f{i}_summary.json").read_text())
        assert s["rbc_diameter_px"] == pytest.approx(est[1], rel=1e-6)
        assert s["rbc_diameter_method"] == "median of 3 images' estimates" and not s["rbc_diameter_uncertain"]
    run = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert run["shared_scale"]["rbc_diameter_px"] == pytest.approx(est[1], abs=0.01)
    assert run["shared_scale"]["images"] == 3 and run["shared_scale"]["quartiles_px"][0] <= est[1]
    own = json.loads((tmp_path / "o" / "own_summary.json").read_text())  # the file's pixel size still wins
    assert own["rbc_diameter_px"] == pytest.approx(30.0) and own["rbc_diameter_method"].startswith("pixel size")
    # a given diameter wins over the shared estimate
    assert main(["segment", str(src / "f0.png"), "--out", str(tmp_path / "o2"), "--model", str(tiny_checkpoint),
                 "-q", "--report", "--shared-scale", "--rbc-diameter", "40"]) == 0
    assert json.loads((tmp_path / "o2" / "f0_summary.json").read_text())["rbc_diameter_px"] == pytest.approx(40.0)


def test_scattered_per_image_estimates_suggest_a_shared_scale(tmp_path, tiny_checkpoint, capsys):
    from napari_bloodseg.cli import _shared_scale_hint

    assert _shared_scale_hint([30.0, 36.0, 50.0]) is None  # too few images to tell
    assert _shared_scale_hint([35.0, 36.0, 36.5, 37.0, 38.0]) is None  # they agree
    hint = _shared_scale_hint([24.0, 30.0, 36.0, 44.0, 52.0])
    assert "--shared-scale" in hint and "36.0 px" in hint
    src = tmp_path / "run"
    src.mkdir()
    for i, d in enumerate((20.0, 28.0, 40.0, 56.0)):  # four magnifications: the estimates scatter
        iio.imwrite(src / f"f{i}.png", render_smear((300, 300), rbc_diameter=d, seed=i).image)
    assert main(["segment", str(src), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
                 "--scale-method", "classical"]) == 0
    assert "--shared-scale segments them all" in capsys.readouterr().out
    assert main(["segment", str(src), "--out", str(tmp_path / "o2"), "--model", str(tiny_checkpoint), "-q",
                 "--scale-method", "classical"]) == 0
    assert "--shared-scale" not in capsys.readouterr().out  # --quiet: no hint


def test_a_file_that_is_no_image_is_one_plain_line_and_leaves_no_file_open(tmp_path, tiny_checkpoint, capsys):
    import gc
    import warnings

    from napari_bloodseg.io import read_image

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    upper = _smear(tmp_path / "FIELD.PNG", (64, 64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="not a readable image .*damaged file"):
            read_image(notes)
        gc.collect()
        assert read_image(upper).shape == (64, 64, 3)  # the suffix's case does not matter
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    rc = main(["segment", str(notes), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
               "--rbc-diameter", "36"])
    err = capsys.readouterr().err
    assert rc == 1 and "notes.txt: not a readable image" in err and "warning" not in err
