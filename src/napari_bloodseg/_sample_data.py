"""napari sample data: a smear rendered by the project's own code (offline, exact ground truth)."""

from __future__ import annotations

from .layers import labels_layer_kwargs


def sample_smear():
    from .render import sample_smear as render

    s = render()
    return [(s.image, {"name": "rendered smear", "rgb": True}, "image")]


def sample_smear_with_truth():
    from .render import sample_smear as render

    s = render()
    return [
        (s.image, {"name": "rendered smear", "rgb": True}, "image"),
        (s.mask, labels_layer_kwargs("rendered smear ground truth"), "labels"),
    ]
