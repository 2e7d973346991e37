"""Time reading the headers of a DICOM series against decoding all of its slices.

Run as ``python benchmarks/_dicom_timing.py FOLDER`` or call :func:`scan_vs_decode`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any

from napari_neuroseg.io.dicom import read_dicom, scan_dicom


def scan_vs_decode(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Time the header scan, the lazy open and the decode of every slice of a series.

    Parameters
    ----------
    folder : str or path-like
        A folder holding one DICOM series (the first series found is timed).

    Returns
    -------
    dict
        ``n_slices``, ``scan_s`` (:func:`scan_dicom`), ``open_s`` (:func:`read_dicom`,
        headers only), ``decode_one_s`` (the middle slice), ``decode_all_s`` (all slices,
        dask's threaded scheduler), ``decode_all_sync_s`` (all slices, one thread),
        ``scan_ms_per_slice``, ``decode_ms_per_slice`` and ``decode_to_scan`` (ratio).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        series = scan_dicom(folder)
        scan_s = time.perf_counter() - start
        start = time.perf_counter()
        image = read_dicom(folder, series=series[0].uid)[0]
        open_s = time.perf_counter() - start
        volume = image.levels[0]
        n = volume.shape[0]
        start = time.perf_counter()
        volume[n // 2].compute(scheduler="sync")
        one_s = time.perf_counter() - start
        start = time.perf_counter()
        volume.compute(scheduler="threads")
        all_s = time.perf_counter() - start
        start = time.perf_counter()
        volume.compute(scheduler="sync")
        sync_s = time.perf_counter() - start
    return {
        "folder": str(folder),
        "series": image.name,
        "n_slices": n,
        "shape": list(volume.shape),
        "dtype": str(volume.dtype),
        "scan_s": scan_s,
        "open_s": open_s,
        "decode_one_s": one_s,
        "decode_all_s": all_s,
        "decode_all_sync_s": sync_s,
        "scan_ms_per_slice": 1000 * scan_s / n,
        "decode_ms_per_slice": 1000 * sync_s / n,
        "decode_to_scan": sync_s / scan_s if scan_s > 0 else float("nan"),
    }


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(json.dumps(scan_vs_decode(arg), indent=2))
