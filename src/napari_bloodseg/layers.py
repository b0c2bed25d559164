"""napari layer metadata for class maps (no Qt, no napari import: plain LayerData kwargs)."""

from __future__ import annotations

import numpy as np

from .classes import CLASS_NAMES, IGNORE_INDEX, napari_colormap_dict


def labels_layer_kwargs(name: str, **extra) -> dict:
    """Kwargs for a Labels layer in the class colours, naming the class under the cursor."""
    from napari.utils.colormaps import DirectLabelColormap

    index = list(range(len(CLASS_NAMES))) + [IGNORE_INDEX]
    kw = {
        "name": name,
        "colormap": DirectLabelColormap(color_dict=napari_colormap_dict()),
        "features": {"index": np.array(index), "class": np.array(list(CLASS_NAMES) + ["ignore"])},
        "opacity": 0.6,
        "metadata": {"bloodseg": {"kind": "class map"}},
    }
    kw.update(extra)
    return kw
