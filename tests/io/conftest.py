"""What the io tests share: a small two-level slide record."""

import dask.array as da
import numpy as np

from napari_neuroseg.io import LazyImage


def lazy_slide() -> LazyImage:
    """A 64 x 96 RGB slide record with a second level, metadata and a warning."""
    levels = [da.zeros((64, 96, 3), dtype=np.uint8, chunks=16), da.zeros((32, 48, 3), np.uint8)]
    return LazyImage(
        levels=levels, axes="yxc", scale=(0.5, 0.5), unit="um", name="s", modality="slide",
        source="/x/s.svs", display={"rgb": True}, metadata={"vendor": "aperio"},
        warnings=["MPP unknown"],
    )
