"""Shapes drawn on label maps for the tests."""

import numpy as np


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean mask of the pixels closer than ``radius`` to ``centre``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
