"""SynthDataset: a map-style torch dataset composing the images on the fly (torch imported on first use)."""

from __future__ import annotations

import numpy as np

from .compose import SynthImage, _Composer
from .config import SynthConfig
from .pool import SamplePool


class _SynthDatasetMixin:
    """Map-style dataset composing images on the fly: item i == image i of :func:`synthesize`
    (same pool, split, seed and config), whatever the DataLoader worker. Returns
    (image uint8 (T, T, 3), mask uint8 (T, T)). Items of one field share its RBC background,
    which is cached (``field_cache`` fields per process): sequential or field-grouped sampling
    is much faster than a full shuffle (or use a smaller ``field_size`` when shuffling)."""

    def __init__(self, pool: SamplePool, split: str = "train", n: int = 1000, seed: int = 0,
                 config: SynthConfig | None = None, field_cache: int = 4):
        self.pool, self.split, self.n, self.seed = pool, split, int(n), int(seed)
        self.config = config or SynthConfig()
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not pool.samples(split=split):
            raise ValueError(f"the sample pool has no samples for split {split!r}")
        self._field_cache = field_cache
        self._composer: _Composer | None = None

    def __len__(self) -> int:
        return self.n

    def compose(self, i: int, rle: bool = True) -> SynthImage:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        i = i % self.n
        if self._composer is None:
            self._composer = _Composer(self.pool, self.seed, self.config, self._field_cache)
        return self._composer.image(self.split, i, self.n, rle)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        si = self.compose(int(i), rle=False)
        return si.image, si.mask

    def grouped_order(self, epoch: int = 0) -> list[int]:
        """A shuffled order that keeps each field's crops together (fields in random order, crops
        shuffled within a field), e.g. ``DataLoader(ds, sampler=ds.grouped_order(epoch))``: one field
        build per ``crops_per_field`` items instead of one per item under a full shuffle."""
        cpf = self.config.crops_per_field
        rng = np.random.default_rng([self.seed, 99, int(epoch)])
        order: list[int] = []
        for f in rng.permutation((self.n + cpf - 1) // cpf).tolist():
            order.extend(rng.permutation(np.arange(f * cpf, min((f + 1) * cpf, self.n))).tolist())
        return order

    def __getstate__(self):
        st = self.__dict__.copy()
        st["_composer"] = None
        return st


_SYNTH_DATASET = None


def synth_dataset_class() -> type:
    """The SynthDataset class (``_SynthDatasetMixin`` + torch's Dataset), built on first use."""
    global _SYNTH_DATASET
    if _SYNTH_DATASET is None:
        from torch.utils.data import Dataset

        _SYNTH_DATASET = type("SynthDataset", (_SynthDatasetMixin, Dataset),
                              {"__module__": "napari_bloodseg.synth", "__qualname__": "SynthDataset",
                               "__doc__": _SynthDatasetMixin.__doc__})
    return _SYNTH_DATASET
