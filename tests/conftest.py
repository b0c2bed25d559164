from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need real data skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real (untrained, width-4) checkpoint: exercises loading, tiling and stitching quickly."""
    import torch

    from napari_bloodseg.checkpoint import ModelInfo, save_checkpoint
    from napari_bloodseg.model import UNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, UNet(width=4), ModelInfo(training={"note": "untrained test model"}))
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
