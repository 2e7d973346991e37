"""Run one model over many inputs; write labels, probabilities and a CSV summary.

Slides are split into regions, one task each, run on a local thread pool or on a
dask.distributed cluster; volumes are one task each. An input that fails is reported in the
summary and skipped; the others finish. Tiles are cached on disk under ``OUT/.neuroseg-cache``,
so an interrupted run resumes without recomputing finished tiles.

A folder of H&E tiles (PNG, JPEG, RGB TIFF) is expanded into its tiles, each with its own output
folder and summary row; ``mpp`` gives the µm/px of slides and tiles that do not state theirs
(:mod:`napari_neuroseg.batch.inputs`).

A nuclear (HoVer-Net) model writes its nuclear probabilities and the nuclear pixel mask. When
it has a type branch, each nuclear pixel also gets its most probable nuclear type, and the
summary gains the area of each type (``type_area_mm2:<type>``). An input analysed as one
region (a tile) also gets the Nuclei widget's instances: ``instances.tif`` and the count and
density of nuclei, per type too (:mod:`napari_neuroseg.batch.nuclei`); an input of several
regions gets those columns empty (instances are not stitched across regions).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed as local_completed
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_neuroseg.analysis.nuclei_types import N_HOVER_MAPS, pixel_types, type_names_of
from napari_neuroseg.analysis.slide import AnalysisError, plan_slide
from napari_neuroseg.analysis.volume import classify_slices, segment_volume
from napari_neuroseg.batch.inputs import expand_inputs, open_input
from napari_neuroseg.batch.nuclei import INSTANCES, nuclei_columns, write_instances
from napari_neuroseg.batch.tasks import (
    one_region_size,
    predict_slide_region,
    segment_nuclei_region,
    slide_regions,
)
from napari_neuroseg.io import LazyImage
from napari_neuroseg.io._atomic import atomic_path
from napari_neuroseg.io.ome_zarr import read_ome_zarr, write_ome_zarr
from napari_neuroseg.io.writers import write_labels, write_probabilities
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.models.spec import ModelSpec

Log = Callable[[str], None]
CACHE = ".neuroseg-cache"
PREDICTION = "prediction.ome.zarr"  #: a slide's probabilities, its labels inside
LABEL_IMAGE = "segmentation"  #: the label image's name in ``PREDICTION/labels/``


def _safe_name(image: LazyImage, source: str) -> str:
    stem = Path(source).name.split(".")[0] or "input"
    name = image.name.replace("/", "_").replace(" ", "_")
    return stem if name in ("", stem) else f"{stem}__{name}"


def _unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name__2``, ``name__3``... when an earlier image of the run has it
    (tiles ``a.png`` and ``a.jpg``)."""
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}__{n}"
    taken.add(unique)
    return unique


class _Executor:
    """A thread pool or a dask.distributed client behind one submit/as_completed interface."""

    def __init__(self, scheduler: str | None, workers: int) -> None:
        self.client = None
        if scheduler:
            from distributed import Client

            self.client = Client(scheduler)
        else:
            self.pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def submit(self, func, *args):
        if self.client is not None:
            return self.client.submit(func, *args, pure=False)
        return self.pool.submit(func, *args)

    def completed(self, futures):
        if self.client is not None:
            from distributed import as_completed

            return as_completed(futures)
        return local_completed(futures)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        else:
            self.pool.shutdown()


def _run_slide(image, spec, source, out, executor, opts, log) -> dict[str, Any]:
    plan = plan_slide(image, spec, stain_normalization=opts["stain"],
                      tissue_only=opts["tissue_only"])
    for note in plan.notes:
        log(f"  {note}")
    h, w = plan.working_shape
    work = zarr.open_group(str(out / ".work.zarr"), mode="w", zarr_format=2)
    probs = work.create_array("p", shape=(spec.n_classes, h, w), chunks=(1, 1024, 1024),
                              dtype="float32", fill_value=0)
    covered = work.create_array("c", shape=(h, w), chunks=(1024, 1024), dtype=bool,
                                fill_value=False)
    typed = spec.task == "instance_segmentation" and bool(spec.extra.get("type_classes"))
    types = work.create_array("t", shape=(h, w), chunks=(1024, 1024), dtype="uint8",
                              fill_value=0) if typed else None
    type_names: tuple[str, ...] = ()
    regions = slide_regions(plan, opts["region_size"])
    nuclear = spec.task == "instance_segmentation"
    task = segment_nuclei_region if nuclear and len(regions) == 1 else predict_slide_region
    if nuclear and len(regions) > 1:
        log(f"  {len(regions)} regions: nuclei not counted (instances are not stitched across "
            f"regions; --region-size {one_region_size(plan)} analyses it as one)")
    cache_root = str(out.parent / CACHE)
    futures = [executor.submit(task, plan, source, r, cache_root) for r in regions]
    nuclei = None
    for done, future in enumerate(executor.completed(futures), 1):
        region, values, cov, *instances = future.result()
        nuclei = instances[0] if instances else None
        box = (slice(region.y0, region.y1), slice(region.x0, region.x1))
        probs[(slice(None), *box)] = values[: spec.n_classes]  # HoVer-Net: h/v/types follow
        covered[box] = cov
        if types is not None:
            type_names = type_names_of(spec, values.shape[0])
            if type_names:
                types[box] = pixel_types(values[N_HOVER_MAPS:])
        log(f"  {progress_bar(done, len(regions))} region {done}/{len(regions)}")
    p = da.from_zarr(probs)
    c = da.from_zarr(covered)
    labels = da.where(c, p.argmax(axis=0) if spec.n_classes > 1 else p[0] >= spec.threshold, 0)
    labels = labels.astype(np.uint8 if spec.n_classes < 256 else np.uint16)
    geo = {"scale": plan.scale, "translate": plan.translate, "unit": "um"}
    # NGFF 0.4: the probabilities are the image, the labels sit in its labels/ group
    write_ome_zarr(out / PREDICTION, p, axes="cyx", kind="image", channel_names=spec.classes,
                   channel_colors=spec.colors, name="probabilities", labels={LABEL_IMAGE: labels},
                   label_classes=spec.classes, label_colors=spec.colors, **geo)
    # count chunk by chunk on the labels just written: 0 = not analysed, k + 1 = class k
    written = read_ome_zarr(out / PREDICTION / "labels" / LABEL_IMAGE)[0][0]
    coded = da.where(c, written.astype(np.int64) + 1, 0).ravel()
    counts = da.bincount(coded, minlength=spec.n_classes + 1).compute()
    pixel_mm2 = plan.scale[0] * plan.scale[1] / 1e6
    row = {f"area_mm2:{name}": round(float(n) * pixel_mm2, 6)
           for name, n in zip(spec.classes, counts[1:], strict=False)}
    analysed_mm2 = float(counts[1:].sum()) * pixel_mm2
    row["analysed_mm2"] = round(analysed_mm2, 6)
    if type_names:
        row.update(_type_areas(da.from_zarr(types), c & (written == 1), type_names, pixel_mm2))
    if nuclear:
        row.update(nuclei_columns(nuclei, analysed_mm2, type_names))
    if nuclei is not None:
        write_instances(out / INSTANCES, nuclei)
        log(f"  {nuclei.count} nuclei")
    else:  # not those of an earlier run over one region
        (out / INSTANCES).unlink(missing_ok=True)
    return row


def _type_areas(types: da.Array, nuclear: da.Array, type_names: tuple[str, ...],
                pixel_mm2: float) -> dict[str, float]:
    """``{"type_area_mm2:<type>": mm²}``: the nuclear pixels of each nuclear type."""
    coded = da.where(nuclear, types, 0).ravel().astype(np.int64)
    counts = da.bincount(coded, minlength=len(type_names)).compute()
    return {f"type_area_mm2:{name}": round(float(n) * pixel_mm2, 6)
            for name, n in zip(type_names[1:], counts[1:], strict=False)}


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """``[#########.........]  45%``: a text progress bar for log lines."""
    filled = round(width * done / total) if total else width
    percent = round(100 * done / total) if total else 100
    return f"[{'#' * filled}{'.' * (width - filled)}] {percent:3d}%"


def _run_volume(image, spec, source, out, opts, log) -> dict[str, Any]:
    runner = source.runner()
    if spec.task == "slice_classification":
        result = classify_slices(image, runner, spec, threshold=opts["threshold"])
        with atomic_path(out / "slices.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["plane", "position_mm", "probability"])
            for z, pos, p in zip(result.planes, result.positions_mm, result.probabilities,
                                 strict=True):
                writer.writerow([int(z), round(float(pos), 3), round(float(p), 6)])
        log(f"  patient probability {result.patient_probability:.3f} -> "
            f"{'positive' if result.positive else 'negative'} at {result.threshold}")
        return {"patient": image.metadata.get("patient_id", ""),
                "patient_probability": round(result.patient_probability, 6),
                "threshold": result.threshold, "decision": int(result.positive),
                "peak_plane": result.peak_plane}
    result = segment_volume(image, runner, spec)
    geo = {"scale": tuple(image.scale), "unit": "mm", "axes": "zyx"}
    write_labels(out / "labels.tif", np.asarray(result.labels).astype(np.uint8), **geo)
    write_probabilities(out / "probabilities.tif", np.asarray(result.probabilities),
                        channel_names=spec.classes, scale=tuple(image.scale), unit="mm",
                        axes="czyx")
    voxel_ml = float(np.prod(image.scale)) / 1000.0
    counts = np.bincount(np.asarray(result.labels).ravel(), minlength=spec.n_classes)
    return {f"volume_ml:{name}": round(float(n) * voxel_ml, 4)
            for name, n in zip(spec.classes, counts, strict=False)}


def _run_image(image, spec, source, out, executor, opts, log) -> dict[str, Any]:
    slide_model = spec.input.resolution_unit == "um"
    if slide_model != (image.modality == "slide"):
        wants = "slides" if slide_model else "CT or MRI volumes"
        raise AnalysisError(f"{spec.name} runs on {wants}; {image.name} is {image.modality}")
    out.mkdir(parents=True, exist_ok=True)
    if image.modality == "slide":
        return _run_slide(image, spec, source, out, executor, opts, log)
    return _run_volume(image, spec, source, out, opts, log)


def predict_inputs(
    inputs: Sequence[str | Path],
    source: ModelSource,
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    workers: int = 1,
    region_size: int = 2048,
    tissue_only: bool = True,
    stain: bool = True,
    threshold: float | None = None,
    mpp: float | None = None,
    force_mpp: bool = False,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Predict every input and write ``out_dir/summary.csv``; returns the summary rows.

    Parameters
    ----------
    inputs : sequence of path
        Slides, H&E pictures (PNG, JPEG, RGB TIFF) and folders of them (one result per
        picture), DICOM folders, NIfTI files, TIFF stacks, LGG folders.
    source : ModelSource
    out_dir : path
        One sub-folder per image (labels and probabilities), ``summary.csv``, and the tile
        cache ``.neuroseg-cache`` that lets an interrupted run resume.
    scheduler : str, optional
        Address of a dask.distributed scheduler (a task per slide region); local threads
        otherwise.
    workers : int
        Local threads (1 by default: torch already uses every core).
    region_size, tissue_only, stain, threshold
        Slide region edge in working pixels; tissue skipping; Macenko; CT decision threshold.
    mpp : float, optional
        µm/px of slides and pictures whose file states none; without it they are taken as
        :data:`~napari_neuroseg.io.slide.DEFAULT_MPP` and the summary's ``mpp_source`` says
        ``ASSUMED``. A file's own value is kept (a different ``mpp`` is logged) unless
        ``force_mpp``.
    force_mpp : bool
        Use ``mpp`` for every slide, even where the file states its µm/px.
    log : callable
        Receives progress lines.
    """
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp must be a positive number of µm per pixel, got {mpp}")
    spec: ModelSpec = source.spec()
    checkpoint = source.checkpoint
    log(f"model {source.weights()}")
    out_root = Path(out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    opts = {"region_size": region_size, "tissue_only": tissue_only, "stain": stain,
            "threshold": threshold}
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    inputs = expand_inputs(inputs, log=log)
    executor = _Executor(scheduler, workers)
    try:
        for n, path in enumerate(inputs, 1):
            log(f"[{n}/{len(inputs)}] {path}")
            try:
                images = open_input(path, mpp, force_mpp=force_mpp, log=log)
            except Exception as err:  # report and go on with the other inputs
                log(f"  failed: {err}")
                rows.append({"input": str(path), "image": "", "status": f"failed: {err}"})
                continue
            for image, columns in images:
                if image.kind != "image":
                    continue
                row = {"input": str(path), "image": image.name, "model": spec.name,
                       "synthetic_model": int(spec.synthetic),
                       "random_weights": int(checkpoint is None),
                       "weights": "" if checkpoint is None else str(checkpoint), **columns}
                try:
                    out = out_root / _unique_name(_safe_name(image, str(path)), taken)
                    row.update(_run_image(image, spec, source, out, executor, opts, log))
                    row["status"] = "ok"
                    row["output"] = str(out)
                except Exception as err:  # one bad input must not stop the others
                    log(f"  failed: {type(err).__name__}: {err}")
                    row["status"] = f"failed: {err}"
                rows.append(row)
    finally:
        executor.close()
    write_summary(out_root / "summary.csv", rows)
    return rows


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the rows as CSV (the union of their columns), atomically."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue())
