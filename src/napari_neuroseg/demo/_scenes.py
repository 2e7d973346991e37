"""The demo's scenes: one viewer per image, its analysis widget docked, run and awaited.

Each scene opens an image (a plugin sample or a real file), docks the modality's widget,
drives it through its public controls (layer choice, buttons), waits for the worker's result
on the widget itself (with a timeout), captions the canvas with what produced the result, and
returns the key numbers for the printed summary line.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import napari
import numpy as np

from napari_neuroseg.analysis.cleanup import volume_ml
from napari_neuroseg.demo._data import SLIDE_NOTES, lgg_patient_folder
from napari_neuroseg.demo._viewer import (
    caption,
    dock,
    focus,
    frame,
    load,
    settle,
    wait_until,
)
from napari_neuroseg.live import visible_box

SLIDE_VIEW_UM = 320.0  # the short side of the slide region the Nuclei widget analyses
LIVE_VIEW_PX = 1200  # working pixels across the Analyse widget's live view: 0.6 mm for a
# model at 0.5 µm/px, 6 mm (a whole section) at 5 µm/px; zoomed in if it has too many tiles
CAPTION_ROOM = 0.25  # of the slide's height, left free above a whole slide for the caption
_TOO_MANY_TILES = re.compile(r"(\d+) tiles are visible; live mode computes at most (\d+)")


@dataclass
class SceneResult:
    """What a scene showed: its numbers (for the summary line) and the canvas caption.

    ``shots`` holds screenshots (RGBA arrays) taken during the scene, by suffix: they are
    saved as ``<stem>-<suffix>.png`` beside the final one.
    """

    numbers: dict[str, str] = field(default_factory=dict)
    weights: str = ""
    caption: str = ""
    shots: dict[str, Any] = field(default_factory=dict)


def weights_text(picker: Any) -> str:
    """Which weights the widget's model picker runs: random, or trained on real or synthetic
    data (the picker's own provenance line)."""
    name = picker.model.value
    if picker.random_weights:
        return f"{name}: RANDOM weights (untrained, output meaningless)"
    return f"{name}: {picker.weights_provenance()}"


def _source(path: Path | None, sample: str) -> str:
    return path.name if path is not None else sample


def _failed(widget: Any) -> str | None:
    status = str(widget.status.value)
    return status if status.startswith("Failed") else None


def _press(button: Any) -> None:
    """Click a magicgui push button the way a user does."""
    button.native.click()


def _slide_with_widget(viewer: napari.Viewer, path: Path | None, name: str) -> tuple[Any, Any]:
    """Open the slide, dock the widget ``name`` beside it and point the widget at the slide."""
    layers = load(viewer, "slide", path)
    slide = next(layer for layer in layers if layer.__class__.__name__ == "Image")
    focus(viewer, [slide])
    _dock, widget = dock(viewer, name)
    widget.layer.value = slide
    return slide, widget


# -- slides: nuclei of the view -------------------------------------------------------------
def slide_scene(viewer: napari.Viewer, path: Path | None, timeout: float) -> SceneResult:
    """Nuclei (HoVer-Net) of the slide region on screen (~320 µm high): count and density."""
    slide, widget = _slide_with_widget(viewer, path, "Nuclei")
    center = _slide_view_center(slide)
    frame(viewer, center, (SLIDE_VIEW_UM, SLIDE_VIEW_UM), margin=1.0)
    settle(0.2)
    _press(widget.run_button)
    wait_until(lambda: widget.runs > 0 and not widget.busy, what="Nuclei on the view",
               timeout=timeout, failed=lambda: _failed(widget),
               status=lambda: str(widget.status.value))
    result = widget.result
    weights = weights_text(widget.picker)
    types = ", ".join(f"{name} {n}" for name, n in result.type_counts.items())
    text = (f"{_source(path, 'synthetic slide')}: {result.count} nuclei in the view, "
            f"{result.density:.0f}/mm²" + (f" ({types})" if types else "")
            + f"\nmodel {weights}")
    caption(viewer, text)
    numbers = {"nuclei": str(result.count), "density_per_mm2": f"{result.density:.0f}"}
    numbers.update({f"nuclei:{name}": str(n) for name, n in result.type_counts.items()})
    return SceneResult(numbers, weights, text)


def live_scene(viewer: napari.Viewer, path: Path | None, timeout: float,
               model: str | None = None) -> SceneResult:
    """The Analyse widget live on the view: labels and a per-class heatmap (of the class the
    view has most of) of the tiles on screen, captioned with the pyramid level read, the
    tiles and the classes' area shares.

    The view spans :data:`LIVE_VIEW_PX` of the model's working pixels (the whole slide when
    that is larger), so a nuclei-scale model shows a fraction of a millimetre and a
    tissue-region model several millimetres.

    Parameters
    ----------
    model : str, optional
        A registry name (random weights when it ships none: the caption says so); None: the
        first model the widget offers with trained weights.
    """
    slide, widget = _slide_with_widget(viewer, path, "Analyse slide")
    widget.picker.model.value = model or _first_trained(widget.picker)
    widget.ensure_session()  # the plan gives the working µm/px, hence the view's size
    wait_until(lambda: widget.session is not None,
               what=f"Analyse: loading {widget.picker.model.value}", timeout=timeout,
               failed=lambda: _failed(widget), status=lambda: str(widget.status.value))
    _frame_live_view(viewer, slide, LIVE_VIEW_PX * widget.session.plan.choice.working_mpp)
    settle(0.2)
    shots: dict[str, Any] = {}

    def keep_preview(status: str) -> None:  # the coarse pass on screen (views of many tiles)
        if str(status).startswith("Preview") and "preview" not in shots:
            caption(viewer, str(status))
            shots["preview"] = viewer.screenshot(canvas_only=False, flash=False)

    widget.status.changed.connect(keep_preview)
    widget.live.value = True

    def done() -> bool:
        status = str(widget.status.value)
        too_many = _TOO_MANY_TILES.match(status)
        if too_many:  # as a user would: zoom in until the view fits the live limit
            visible, limit = (int(g) for g in too_many.groups())
            viewer.scene.camera.zoom *= 1.05 * np.sqrt(visible / (0.8 * limit))
            widget.status.value = "Zoomed in to fit the live limit ..."
            return False
        return widget.heatmap_layer is not None and (
            status == "Everything visible is computed"
            or (status.startswith("0 tile(s) pending") and sum(widget.counts.values()) > 0))

    wait_until(done, what="Analyse (live) on the view", timeout=timeout,
               failed=lambda: _failed(widget), status=lambda: str(widget.status.value))
    widget.live.value = False  # the screenshot's view stays as computed
    widget.status.changed.disconnect(keep_preview)
    weights = weights_text(widget.picker)
    shares, area_mm2 = view_class_shares(widget.session, viewer)
    found = sorted(list(shares)[1:], key=lambda name: -shares[name])  # class 0: background
    if found and shares[found[0]] > 0:  # the heatmap of what the view has most of
        widget.heat_class.value = found[0]
    text, numbers = _live_caption(widget, _source(path, "synthetic slide"), shares, area_mm2)
    text += f"\nmodel {weights}"
    note = SLIDE_NOTES.get(path.name) if path is not None else None
    if note:
        text += f"\n{note}"
    caption(viewer, text)
    return SceneResult(numbers, weights, text, shots)


def _frame_live_view(viewer: napari.Viewer, slide: Any, side: float) -> None:
    """A ``side`` (µm) square of tissue, or the whole slide (room above it for the caption)
    when it is smaller than ``side``."""
    extent = np.asarray(slide.extent.world, dtype=float)[:, -2:]
    size = extent[1] - extent[0]
    if side < float(np.max(size)):
        frame(viewer, _slide_view_center(slide), (side, side), margin=1.0)
    else:
        room = np.array([CAPTION_ROOM * size[0], 0.0])
        frame(viewer, (extent[0] + extent[1] - room) / 2, size + room)


def _first_trained(picker: Any) -> str:
    """The first model the picker offers with trained weights (else its current choice)."""
    registry = picker.registry
    trained = [name for name in picker.model.choices
               if name in registry.names() and registry.checkpoint(name) is not None]
    return trained[0] if trained else picker.model.value


def view_class_shares(session: Any, viewer: napari.Viewer) -> tuple[dict[str, float], float]:
    """Each class's share of the analysed pixels on screen, and their area in mm².

    Analysed pixels are those of computed tiles (skipped tiles, off the tissue, keep all-zero
    probabilities and are left out).
    """
    camera = viewer.scene.camera
    region = session.working_region(visible_box(camera.center, camera.zoom,
                                                viewer.canvas.size))
    classes = list(session.plan.spec.classes)
    if region is None:
        return dict.fromkeys(classes, 0.0), 0.0
    probabilities, labels = session.store.read(region)
    analysed = probabilities.max(axis=0) > 0
    n = int(analysed.sum())
    counts = np.bincount(labels[analysed].ravel(), minlength=len(classes))[: len(classes)]
    area_mm2 = n * (session.plan.choice.working_mpp / 1000.0) ** 2
    return {name: float(c) / n if n else 0.0 for name, c in zip(classes, counts, strict=True)}, \
        area_mm2


def _live_caption(widget: Any, source: str, shares: dict[str, float],
                  area_mm2: float) -> tuple[str, dict[str, str]]:
    """The caption's analysis lines (view, level, tiles, shares) and the summary numbers."""
    plan, counts = widget.session.plan, widget.counts
    choice = plan.choice
    meta = plan.image.metadata
    native = int(meta.get("native_levels", len(plan.image.levels)))
    read = (f"engine read level {choice.level} ({choice.level_mpp:.3g} µm/px"
            + (f", computed from the file's level {native - 1}" if choice.level >= native
               else "") + ")"
            + (f", resampled to {choice.working_mpp:.3g} µm/px working" if choice.resample
               else f" as it is ({choice.working_mpp:.3g} µm/px working)"))
    assumed = ("" if meta.get("mpp_known", True)
               else f"the file records no µm/px: {choice.base_mpp:.3g} µm/px assumed; ")
    top = sorted(shares.items(), key=lambda item: -item[1])
    listed = ", ".join(f"{name} {100 * share:.0f}%" for name, share in top if share >= 0.005)
    text = (f"{source}: {widget.picker.model.value} live on the view, heatmap of "
            f"'{widget.heat_class.value}'\n{read}\n{assumed}{counts['computed']} tiles "
            f"computed, {counts['skipped']} skipped (no tissue)"
            f"\nclasses of the {area_mm2:.2f} mm² analysed: {listed or 'none'}")
    numbers = {"level": str(choice.level), "level_mpp": f"{choice.level_mpp:.3g}",
               "working_mpp": f"{choice.working_mpp:.3g}",
               "tiles_computed": str(counts["computed"]),
               "tiles_skipped": str(counts["skipped"]), "area_mm2": f"{area_mm2:.3f}"}
    numbers.update({f"share:{name.replace(' ', '_')}": f"{share:.3f}"
                    for name, share in shares.items()})
    return text, numbers


def _slide_view_center(layer: Any) -> tuple[float, float]:
    """A world point inside the tissue: the centre of the darkest (most stained) block."""
    level = layer.data[-1] if layer.multiscale else layer.data
    thumb = np.asarray(level[..., :3], dtype=np.float32).mean(axis=-1)
    block = max(1, min(thumb.shape) // 8)
    h, w = (s // block for s in thumb.shape)
    blocks = thumb[: h * block, : w * block].reshape(h, block, w, block).mean(axis=(1, 3))
    # tissue is darker than the white background; prefer blocks away from the border
    inner = blocks[1:-1, 1:-1] if h > 2 and w > 2 else blocks
    offset = 1 if inner is not blocks else 0
    y, x = np.unravel_index(np.argmin(inner), inner.shape)
    factor = np.asarray(layer.data[0].shape[:2]) / np.asarray(level.shape[:2]) \
        if layer.multiscale else np.ones(2)
    pixel = (np.array([y + offset, x + offset]) + 0.5) * block * factor
    world = pixel * np.asarray(layer.scale[-2:]) + np.asarray(layer.translate[-2:])
    return float(world[0]), float(world[1])


# -- CT: slice probabilities and the brain mask ---------------------------------------------
def ct_scene(viewer: napari.Viewer, path: Path | None, timeout: float) -> SceneResult:
    """Per-slice classification (plot, decision) then the brain-extraction mask and volume."""
    layers = load(viewer, "ct", path)
    ct = next(layer for layer in layers if layer.__class__.__name__ == "Image")
    _dock, widget = dock(viewer, "CT analysis")
    widget.layer.value = ct.name
    focus(viewer, [ct], plane=_brain_plane(ct))
    widget.apply_window("brain")
    _press(widget.classify_button)
    wait_until(lambda: widget.result is not None
               and len(widget.result.planes) == ct.data.shape[0],
               what="CT slice classification", timeout=timeout,
               failed=lambda: _failed(widget), status=lambda: str(widget.status.value))
    weights = weights_text(widget.picker)  # (the widget titles its plot RANDOM weights)
    _press(widget.mask_button)
    wait_until(lambda: widget.mask_volume_ml is not None, what="CT brain mask",
               timeout=timeout, failed=lambda: _failed(widget),
               status=lambda: str(widget.status.value))
    volume = float(widget.mask_volume_ml)
    peak = float(np.max(widget.result.probabilities))
    text = (f"{_source(path, 'synthetic CT phantom')}: brain mask {volume:.0f} ml\n"
            f"(brain extraction by HU thresholds, no model)\nslice classifier {weights}")
    caption(viewer, text)
    return SceneResult({"brain_ml": f"{volume:.0f}",
                        "slices": str(len(widget.result.planes)),
                        "max_slice_probability": f"{peak:.2f}"}, f"classifier {weights}", text)


def _brain_plane(layer: Any) -> int:
    """The slice with the most soft tissue (0-80 HU): a slice through the brain."""
    data = layer.data
    depth = data.shape[0]
    step = max(1, depth // 16)
    planes = list(range(0, depth, step))
    counts = [int(np.count_nonzero((np.asarray(data[z]) > 0) & (np.asarray(data[z]) < 80)))
              for z in planes]
    return planes[int(np.argmax(counts))]


# -- MRI: FLAIR segmentation and tumour volume ----------------------------------------------
def mri_scene(viewer: napari.Viewer, path: Path | None, timeout: float) -> SceneResult:
    """Segment one MRI stack with the FLAIR model; tumour volume against the reference mask."""
    if path is not None and path.is_dir():
        path = lgg_patient_folder(path)
    layers = load(viewer, "mri", path)
    flair, reference = _mri_patient(viewer, layers)
    _dock, widget = dock(viewer, "MRI")
    widget.layer.value = flair
    patient = [flair] + ([reference] if reference is not None else [])
    plane = _largest_plane(reference) if reference is not None else None
    focus(viewer, patient, plane=plane)
    if reference is not None:  # the reference mask as an outline, under the model's labels
        reference.contour = 2
    _press(widget.segment_button)
    wait_until(lambda: not widget.running and widget.last_measure is not None
               and not str(widget.status.value).startswith("Cleaning"),
               what="MRI segmentation", timeout=timeout, failed=lambda: _failed(widget),
               status=lambda: str(widget.status.value))
    measured = widget.last_measure
    weights = weights_text(widget.picker)
    numbers = {"tumour_ml": f"{measured['ml']:.3f}", "slices": str(flair.data.shape[0])}
    source = flair.metadata.get("neuroseg", {}).get("patient_id") if path is not None else None
    text = f"{source or 'synthetic MRI stack'}: tumour {measured['ml']:.2f} ml"
    if reference is not None:
        ref_ml = volume_ml(np.asarray(reference.data), tuple(reference.scale),
                           str(reference.units[0]))
        numbers["reference_ml"] = f"{ref_ml:.3f}"
        text += f" (reference mask, outline: {ref_ml:.2f} ml)"
    if flair.metadata.get("neuroseg", {}).get("voxel_size") == "unknown":
        text += "\n(voxel size unknown: 1 mm assumed)"
    if source and any(source.startswith(p) for p in _training_patients(widget.picker)):
        text += "\n(a training patient of these weights; held-out scores: docs/models.md)"
    text += f"\nmodel {weights}"
    caption(viewer, text)
    return SceneResult(numbers, weights, text)


def _training_patients(picker: Any) -> list[str]:
    """The patients the picker's weights were trained on (their sidecar), if recorded."""
    from napari_neuroseg.models.checkpoint import read_spec

    path = picker.checkpoint()
    try:
        return [str(p) for p in read_spec(path).extra.get("training_patients", [])] if path else []
    except (OSError, ValueError):
        return []


def _mri_patient(viewer: napari.Viewer, layers: list[Any]) -> tuple[Any, Any]:
    """The FLAIR layer and reference mask of the patient with the largest mask.

    A folder of Kaggle LGG slices opens as every patient's channels and mask; the other
    patients' layers are removed so the layer list shows one patient.
    """
    images = [lyr for lyr in layers if lyr.__class__.__name__ == "Image"]
    masks = [lyr for lyr in layers if lyr.__class__.__name__ == "Labels"]

    def patient(layer: Any) -> Any:
        meta = layer.metadata.get("neuroseg", {})
        return meta.get("patient_id") or meta.get("source")

    best = max(masks, key=lambda m: int(np.count_nonzero(np.asarray(m.data))), default=None)
    chosen = patient(best) if best is not None else patient(images[0])
    for layer in list(layers):
        if patient(layer) != chosen:
            viewer.layers.remove(layer)
    flair = next((lyr for lyr in images if patient(lyr) == chosen
                  and lyr.name.endswith("FLAIR")),
                 next(lyr for lyr in images if patient(lyr) == chosen))
    return flair, best


def _largest_plane(mask: Any) -> int:
    data = np.asarray(mask.data)
    return int(np.argmax(data.reshape(data.shape[0], -1).astype(bool).sum(axis=1)))
