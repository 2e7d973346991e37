"""Nucleus counts in the batch summary, for inputs analysed as one region.

A nuclear (HoVer-Net) model's input that fits one batch region (H&E tiles and other small
images, see ``--region-size``) gets the Nuclei widget's instances
(:func:`~napari_neuroseg.analysis.region.segment_nuclei`'s post-processing, run in the
region's task by :func:`~napari_neuroseg.batch.tasks.segment_nuclei_region`): its summary
row gains the count and density of nuclei, per type too for a typed model, and its output
folder the instance labels (:data:`INSTANCES`). Inputs of several regions get the same
columns, empty: instances are not stitched across regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_neuroseg.analysis.region import NucleiResult, nuclei_density
from napari_neuroseg.io.writers import write_labels

__all__ = ["INSTANCES", "nuclei_columns", "write_instances"]

#: The instance labels of a one-region input, in its output folder.
INSTANCES = "instances.tif"


def nuclei_columns(nuclei: NucleiResult | None, analysed_mm2: float,
                   type_names: Sequence[str] = ()) -> dict[str, Any]:
    """The summary's nucleus columns: ``nuclei``, ``nuclei_per_mm2`` and, for a typed model,
    ``nuclei:<type>`` and ``nuclei_per_mm2:<type>``.

    Parameters
    ----------
    nuclei : NucleiResult or None
        The input's nuclei; None when it was analysed as several regions (every column is
        then empty).
    analysed_mm2 : float
        The area the model ran on (the summary's ``analysed_mm2``, tiles skipped as
        background left out): the densities are per mm² of it.
    type_names : sequence of str
        The model's type names, background first (for the empty columns of several regions).

    Returns
    -------
    dict
        Counts as in :attr:`NucleiResult.count` and :attr:`NucleiResult.type_counts` (every
        nuclear type, and the background type when some nucleus got it, so that the types
        add up to the count); densities by :func:`nuclei_density`.
    """
    if nuclei is None:
        types = [f":{name}" for name in type_names[1:]]
        return {f"{column}{suffix}": "" for column in ("nuclei", "nuclei_per_mm2")
                for suffix in ("", *types)}
    counts = {"": nuclei.count, **{f":{name}": n for name, n in nuclei.type_counts.items()}}
    row: dict[str, Any] = {f"nuclei{suffix}": n for suffix, n in counts.items()}
    row.update({f"nuclei_per_mm2{suffix}": round(nuclei_density(n, analysed_mm2), 3)
                for suffix, n in counts.items()})
    return row


def write_instances(path: str | Path, nuclei: NucleiResult) -> list[str]:
    """Write the instance labels as an int32 TIFF (0 background, 1..n nuclei).

    The pixel size is stored in the slide's unit (µm); the TIFF description keeps the name
    ``instances``, the translate that places the working grid on the input, and the count.
    """
    return write_labels(path, np.asarray(nuclei.data, dtype=np.int32), scale=nuclei.scale,
                        unit=nuclei.unit,
                        metadata={"name": "instances", "nuclei": nuclei.count,
                                  "translate": [float(t) for t in nuclei.translate]})
