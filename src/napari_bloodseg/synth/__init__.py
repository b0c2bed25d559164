"""Synthesizer: training sets composited from single-cell samples, the way the reference work did.

Recipe (reference work, abhanjac/blood_cell_image_segmentation):

1. Large RBC *background fields* (``field_size`` x ``field_size``, 1000 by default) are filled with
   randomly placed RBC samples; the fields of a split cycle through three kinds: infected RBCs
   only, healthy RBCs only, and a mix of both (one third each).
2. ``tile`` x ``tile`` blocks (224) are cropped from each field at random (``crops_per_field``
   crops share one field, as the reference did with its 1500 fields), and WBC, thrombocyte and
   platelet-clump samples are affixed at random positions, rotations and flips.
3. Every combination of {no WBC, one of the 5 WBC types, two different WBC types} x {no platelet,
   thrombocytes, a clump, both} x {the 3 background kinds} (16 x 4 x 3 = 192) appears: each kind's
   images cycle through a shuffled list of the 64 cell combinations, so a split of
   ``3 * crops_per_field * ceil(64 / crops_per_field)`` images (192 by default) holds all 192.

Objects drawn later win their pixels in the mask; cells cut by the tile border keep their class.
Realism knobs (on by default, all drawn from the image's own seed): per-image stain (optical
density gain per channel) and colour (white balance) jitter, an illumination gradient, Gaussian
blur, sensor noise, per-field RBC density, RBC overlap and magnification (scale) jitter, and a
small per-object colour jitter. Each field's RBC colours are also pulled towards one reference
sample's (``field_color_harmony``), so a field looks like one slide and a bank whose infected and
healthy RBCs come from different sources does not teach "this source's colour = infected".

Output layout (``<out>`` is the *set root*)::

    <out>/synth.json                 {"format": "bloodseg-synth", ...}: seed, counts, config, pool
    <out>/<split>/images/<id>.png    RGB uint8, 224 x 224
    <out>/<split>/masks/<id>.png     uint8 class ids (classes.py table)
    <out>/<split>/labels/<id>.json   {"0": {className, classIdx, posX, posY, bboxW, bboxH, tlX, tlY,
                                           samplePath, bgPath}, "1": ...}, one entry per visible object
    <out>/<split>/coco.json          COCO instances: compressed-RLE segmentation, ``file_name``
                                     relative to the split folder, categories 1..9 = the class table

``<id>`` is ``<split>_<index>`` (zero-padded). Image ``index`` of a split depends only on
(seed, split, index) — and its field on (seed, split, index // crops_per_field) — so the same seed
gives byte-identical files with any number of worker processes, and :class:`SynthDataset` item
``i`` equals the written image ``i``.

Splits are drawn only from the pool's samples of that split. The pool is a :class:`SamplePool`:
from a sample bank folder (``manifest.csv`` + RGBA PNGs) or procedural (``render.render_cell``).

No napari and no torch import at module level (``SynthDataset`` imports torch on first use).

Modules: ``config`` (constants, :class:`SynthConfig`), ``pool`` (:class:`SamplePool`), ``sprites``
(warping and pasting one sample), ``compose`` (background fields, the plan, one tile),
``realism`` (per-image stain, light, blur, noise), ``encode`` (PNG, COCO RLE), ``writer``
(:func:`synthesize` and its worker processes), ``reader`` (reading a set into napari layers),
``dataset`` (:class:`SynthDataset`).
"""

from .compose import SynthImage, compose_image, image_id
from .config import DEFAULT_COUNTS, REFERENCE_COUNTS, SPLITS, SynthConfig
from .encode import encode_png, instance_table, rle_encode
from .pool import PoolSample, SamplePool, format_missing, missing_classes
from .reader import is_synth_set, read_synth_set
from .writer import check_output, iter_synthesize, synthesize

__all__ = [
    "DEFAULT_COUNTS",
    "REFERENCE_COUNTS",
    "SPLITS",
    "PoolSample",
    "SamplePool",
    "SynthConfig",
    "SynthImage",
    "SynthDataset",
    "compose_image",
    "iter_synthesize",
    "synthesize",
    "missing_classes",
    "is_synth_set",
    "read_synth_set",
    "encode_png",
    "rle_encode",
    "instance_table",
    "check_output",
    "format_missing",
    "image_id",
]


def __getattr__(name: str):
    # SynthDataset subclasses torch's Dataset; built on first use so that importing this
    # package (the CLI, napari) does not import torch.
    if name == "SynthDataset":
        from .dataset import synth_dataset_class

        return synth_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
