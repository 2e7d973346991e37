"""Licences of the public data sets that models are trained on.

A checkpoint's sidecar records the licence of its training data in
``spec.extra["training_data_licence"]`` (a dict, see :func:`licence_record`), and the model
picker shows it (:func:`licence_text`, through
:func:`napari_neuroseg.models.bundled.weights_provenance`). Training finds the licence from
the source paths of a dataset's items (:func:`licence_of_sources`): a set is recognised by
the name of one of the folders it is distributed in (as in ``../shared/data`` and the public
releases). Data a user brings is not recognised, and then nothing is recorded.

The licences are those stated by each set's publisher (see ``../shared/data/README.md``);
weights trained on a non-commercial set carry its restriction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

__all__ = [
    "KNOWN_DATA_SETS",
    "DataLicence",
    "licence_of_sources",
    "licence_record",
    "licence_text",
]


@dataclass(frozen=True)
class DataLicence:
    """The licence of one public data set.

    Attributes
    ----------
    data : str
        The set's short name, e.g. ``"Kaggle LGG"``.
    licence : str
        The licence or terms, e.g. ``"CC BY-NC-SA 4.0"``.
    non_commercial : bool or None
        Whether it forbids commercial use; None when the publisher says nothing clear.
    folders : tuple of str
        Folder names the set is distributed in (a source path containing one is this set).
    """

    data: str
    licence: str
    non_commercial: bool | None
    folders: tuple[str, ...]


KNOWN_DATA_SETS: tuple[DataLicence, ...] = (
    DataLicence("Kaggle LGG MRI segmentation (Buda et al. 2019)", "CC BY-NC-SA 4.0", True,
                ("lgg_mri_slices", "lgg_mri_kaggle3m", "kaggle_3m", "lgg-mri-segmentation")),
    DataLicence("MoNuSeg 2018 (Kumar et al.)", "CC BY-NC-SA 4.0", True,
                ("nuclei_monuseg", "MoNuSeg", "MoNuSeg 2018 Training Data")),
    DataLicence("IvyGAP (Allen Institute)", "Allen Institute terms of use (non-commercial)",
                True, ("gbm_tissue_ivygap",)),
    DataLicence("TCGA-LGG H&E tiles with corrected nuclear contours",
                "none stated, published for research use", None, ("nuclei_lgg_tiles",)),
    DataLicence("CoNSeP (Graham et al. 2019)", "none stated, published for research use",
                None, ("nuclei_consep", "CoNSeP")),
    # ../shared/data/ihc holds both: scikit-image's colon IHC image (BSD-3-Clause) and the
    # DeepLIIF sample tiles (non-commercial); a model trained on the folder carries both.
    DataLicence("IHC samples (scikit-image colon IHC; DeepLIIF sample tiles)",
                "BSD-3-Clause (scikit-image); non-commercial (DeepLIIF sample data)", True,
                ("ihc",)),
)


def licence_of_sources(
    paths: Iterable[str | PurePath | None], known: Iterable[DataLicence] = KNOWN_DATA_SETS
) -> list[DataLicence]:
    """The known data sets that ``paths`` come from, in the order of ``known``.

    Parameters
    ----------
    paths : iterable of str, path or None
        Source paths of a dataset's items (None entries are skipped).
    known : iterable of DataLicence
        The sets to recognise (default :data:`KNOWN_DATA_SETS`).

    Returns
    -------
    list of DataLicence
        Empty when no path lies in a known set's folder.
    """
    parts: set[str] = set()
    for path in paths:
        if path is not None:
            parts.update(PurePath(path).parts)
    return [entry for entry in known if parts.intersection(entry.folders)]


def licence_record(sets: Iterable[DataLicence]) -> dict[str, Any] | None:
    """The JSON-friendly ``training_data_licence`` of a sidecar, or None without sets.

    ``{"licence": str, "non_commercial": bool | None, "data": [str, ...]}``: the licences
    joined with ``"; "``; non-commercial when any set is.
    """
    sets = list(sets)
    if not sets:
        return None
    flags = [s.non_commercial for s in sets]
    non_commercial = True if any(flags) else (None if None in flags else False)
    licences = list(dict.fromkeys(f"{s.licence} ({s.data})" if len(sets) > 1 else s.licence
                                  for s in sets))
    return {"licence": "; ".join(licences), "non_commercial": non_commercial,
            "data": [s.data for s in sets]}


def licence_text(extra: Mapping[str, Any]) -> str | None:
    """One phrase for the UI from a spec's ``extra``: ``"data licence: CC BY-NC-SA 4.0,
    non-commercial use only"``; None when no licence is recorded.

    A plain string in ``training_data_licence`` is shown as it is.
    """
    value = extra.get("training_data_licence")
    if not value:
        return None
    if isinstance(value, str):
        return f"data licence: {value}"
    if not isinstance(value, Mapping) or not value.get("licence"):
        return None
    text = f"data licence: {value['licence']}"
    return text + ", non-commercial use only" if value.get("non_commercial") else text
