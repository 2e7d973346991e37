"""Image-quality numbers and the tile grid of the ``stain`` task (IHC -> H&E CycleGAN).

What each number measures (all on whole tiles, centre-cropped to a multiple of 4 pixels,
RGB in [0, 1]; translations run through the plugin's :class:`ModelRunner`):

* ``cycle_psnr_a`` / ``cycle_ssim_a``: A -> B -> A reconstruction against the input IHC tile
  (``cycle_*_b`` the same for B -> A -> B). They measure how much of the content survives the
  round trip, NOT how H&E-like the translation looks: identity generators would score best.
* ``identity_psnr_b`` / ``identity_ssim_b``: A -> B applied to a real H&E tile against that
  tile (``identity_*_a``: B -> A on real IHC). A translator should leave a tile already in
  its target stain as it is; the identity loss trains exactly that.
* ``paired_psnr_ab`` / ``paired_ssim_ab``: A -> B against the real H&E tile an item is
  paired with (``extra["pair"]``, see :func:`pair_map`; ``paired_*_ba`` the other way).
  Only as good as the registration of the pair: consecutive sections (as in the BCI dataset)
  are not pixel-identical, so these are comparative numbers, not absolute fidelity.
* ``color_distance_ab``: distance between the colour statistics of the translated A tiles
  and of the real B tiles: per CIELAB channel, the mean and standard deviation over all
  pixels of the set, combined as ``sqrt(sum_c (dmean_c**2 + dstd_c**2))`` in LAB units.
  ``color_distance_untranslated`` is the same for the raw A tiles (the gap before
  translation), ``color_distance_ba`` for B -> A against real A. It says whether the colours
  match the target stain on the whole, nothing about structure.

PSNR is in dB with data range 1, capped at :data:`PSNR_CAP` for identical images; SSIM is
scikit-image's (7x7 window, per channel, averaged). Each is the mean over tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from skimage.color import rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.dataset.manifest import Item

__all__ = ["PSNR_CAP", "ColorStats", "crop4", "pair_map", "plot_translation_grid",
           "translation_metrics"]

PSNR_CAP = 100.0
Translate = Callable[[np.ndarray], np.ndarray]


def psnr_ssim(reference: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """PSNR (dB, capped at :data:`PSNR_CAP`) and SSIM of two ``(h, w, 3)`` images in [0, 1]."""
    reference, image = (np.asarray(x, dtype=np.float64) for x in (reference, image))
    if np.array_equal(reference, image):
        return PSNR_CAP, 1.0
    psnr = peak_signal_noise_ratio(reference, image, data_range=1.0)
    ssim = structural_similarity(reference, image, data_range=1.0, channel_axis=-1)
    return min(float(psnr), PSNR_CAP), float(ssim)


class ColorStats:
    """Pooled per-channel mean and standard deviation of a set of RGB images, in CIELAB."""

    def __init__(self) -> None:
        self.n = 0
        self.total = np.zeros(3)
        self.squares = np.zeros(3)

    def update(self, image: np.ndarray) -> None:
        """Add an ``(h, w, 3)`` RGB image in [0, 1]."""
        lab = rgb2lab(image).reshape(-1, 3)
        self.n += lab.shape[0]
        self.total += lab.sum(axis=0)
        self.squares += (lab**2).sum(axis=0)

    @property
    def mean(self) -> np.ndarray:
        """L*, a*, b* means."""
        return self.total / max(self.n, 1)

    @property
    def std(self) -> np.ndarray:
        """L*, a*, b* standard deviations."""
        return np.sqrt(np.maximum(self.squares / max(self.n, 1) - self.mean**2, 0.0))

    def distance(self, other: ColorStats) -> float:
        """``sqrt(sum_c (dmean_c**2 + dstd_c**2))`` in LAB units."""
        return float(np.sqrt(((self.mean - other.mean) ** 2
                              + (self.std - other.std) ** 2).sum()))


def pair_map(data: Dataset, items: Sequence[Item] | None = None) -> dict[str, str]:
    """``{A item id: B item id}`` from ``extra["pair"]`` (set on either item of a pair).

    Pairs with an item outside ``items`` (default: all) are left out.

    Raises
    ------
    ValueError
        A pair names an unknown item, an item of the same domain, an image of another
        height/width, or an item paired twice.
    """
    by_id = {item.id: item for item in data.items}
    chosen = set(by_id) if items is None else {item.id for item in items}
    a_to_b: dict[str, str] = {}
    b_to_a: dict[str, str] = {}
    for item in data.items:
        other_id = item.extra.get("pair")
        if other_id is None:
            continue
        other = by_id.get(other_id)
        where = f"{data.path}: item {item.id!r} extra.pair={other_id!r}"
        if other is None:
            raise ValueError(f"{where} names no item of the dataset")
        if other.domain == item.domain:
            raise ValueError(f"{where} is of the same domain {item.domain!r}; a pair joins an "
                             "A (IHC) and a B (H&E) item")
        if tuple(other.shape[:2]) != tuple(item.shape[:2]):
            raise ValueError(f"{where}: images of different sizes {tuple(item.shape[:2])} "
                             f"and {tuple(other.shape[:2])}")
        a, b = (item.id, other.id) if item.domain == "A" else (other.id, item.id)
        if a_to_b.get(a, b) != b or b_to_a.get(b, a) != a:
            raise ValueError(f"{where}: {a!r} or {b!r} is already paired with another item")
        a_to_b[a], b_to_a[b] = b, a
    return {a: b for a, b in a_to_b.items() if a in chosen and b in chosen}


def crop4(image: np.ndarray) -> np.ndarray:
    """Centre crop to a multiple of 4 pixels (the generator's size rule)."""
    h, w = (s - s % 4 for s in image.shape[:2])
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[top:top + h, left:left + w]


def _unit(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float64) / 255.0, 0.0, 1.0)


def _batches(data: Dataset, items: Sequence[Item], batch_size: int):
    """``(items, uint8-range float32 NCHW batch)`` of same-shape tiles, in order."""
    chunk: list[tuple[Item, np.ndarray]] = []
    for item in items:
        image = crop4(np.asarray(data.read_image(item))[..., :3])
        if chunk and (len(chunk) == batch_size or chunk[0][1].shape != image.shape):
            yield _stack(chunk)
            chunk = []
        chunk.append((item, image))
    if chunk:
        yield _stack(chunk)


def _stack(chunk):
    items = [item for item, _ in chunk]
    return items, np.stack([image.transpose(2, 0, 1) for _, image in chunk]).astype(np.float32)


def _side(data: Dataset, items: Sequence[Item], forward: Translate, backward: Translate | None,
          pairs: dict[str, str], batch_size: int, out: dict[str, Any]) -> None:
    """Translate one domain's tiles; fill cycle, paired and colour accumulators."""
    for batch_items, batch in _batches(data, items, batch_size):
        fake = forward(batch)
        rec = backward(fake * 255.0) if backward is not None else None
        for i, item in enumerate(batch_items):
            real = batch[i].transpose(1, 2, 0) / 255.0
            translated = fake[i].transpose(1, 2, 0).astype(np.float64)
            out["source"].update(real)
            out["translated"].update(translated)
            if rec is not None:
                out["cycle"].append(psnr_ssim(real, rec[i].transpose(1, 2, 0)))
            partner = pairs.get(item.id)
            if partner is not None:
                target = _unit(crop4(np.asarray(data.read_image(partner))[..., :3]))
                out["paired"].append(psnr_ssim(target, translated))


def _identity(data: Dataset, items: Sequence[Item], translate: Translate, batch_size: int
              ) -> list[tuple[float, float]]:
    """PSNR/SSIM of ``translate(tile)`` against the tile, for tiles already in the target
    stain."""
    scores = []
    for _, batch in _batches(data, items, batch_size):
        same = translate(batch)
        for real, out in zip(batch, same, strict=True):
            scores.append(psnr_ssim(real.transpose(1, 2, 0) / 255.0, out.transpose(1, 2, 0)))
    return scores


def _mean_scores(scores: list[tuple[float, float]], psnr_key: str, ssim_key: str
                 ) -> dict[str, float]:
    if not scores:
        return {}
    values = np.asarray(scores, dtype=np.float64)
    return {psnr_key: float(values[:, 0].mean()), ssim_key: float(values[:, 1].mean())}


def translation_metrics(data: Dataset, a_items: Sequence[Item], b_items: Sequence[Item],
                        translate_ab: Translate, translate_ba: Translate | None = None,
                        batch_size: int = 8) -> dict[str, Any]:
    """The ``stain`` numbers (see the module docstring) for A tiles and B tiles of ``data``.

    Parameters
    ----------
    translate_ab, translate_ba : callable
        ``float32 NCHW in 0..255 -> float32 NCHW in [0, 1]`` (a :class:`ModelRunner`).
        Without ``translate_ba`` (a lone A->B checkpoint) the cycle and B->A numbers are
        left out.

    Returns
    -------
    dict
        ``n_a``, ``n_b``, ``n_pairs`` and the numbers that apply.
    """
    pairs = pair_map(data, [*a_items, *b_items])
    side_a = {"source": ColorStats(), "translated": ColorStats(), "cycle": [], "paired": []}
    _side(data, a_items, translate_ab, translate_ba, pairs, batch_size, side_a)
    metrics: dict[str, Any] = {"n_a": len(a_items), "n_b": len(b_items), "n_pairs": len(pairs)}
    metrics.update(_mean_scores(side_a["cycle"], "cycle_psnr_a", "cycle_ssim_a"))
    metrics.update(_mean_scores(side_a["paired"], "paired_psnr_ab", "paired_ssim_ab"))
    metrics.update(_mean_scores(_identity(data, b_items, translate_ab, batch_size),
                                "identity_psnr_b", "identity_ssim_b"))
    if translate_ba is not None:
        metrics.update(_mean_scores(_identity(data, a_items, translate_ba, batch_size),
                                    "identity_psnr_a", "identity_ssim_a"))
        reverse = {b: a for a, b in pairs.items()}
        side_b = {"source": ColorStats(), "translated": ColorStats(), "cycle": [],
                  "paired": []}
        _side(data, b_items, translate_ba, translate_ab, reverse, batch_size, side_b)
        metrics.update(_mean_scores(side_b["cycle"], "cycle_psnr_b", "cycle_ssim_b"))
        metrics.update(_mean_scores(side_b["paired"], "paired_psnr_ba", "paired_ssim_ba"))
        real_b = side_b["source"]
        if a_items and b_items:
            metrics["color_distance_ba"] = side_b["translated"].distance(side_a["source"])
    else:
        real_b = ColorStats()
        for _, batch in _batches(data, b_items, batch_size):
            for image in batch:
                real_b.update(image.transpose(1, 2, 0) / 255.0)
    if a_items and b_items:
        metrics["color_distance_ab"] = side_a["translated"].distance(real_b)
        metrics["color_distance_untranslated"] = side_a["source"].distance(real_b)
    return metrics


def plot_translation_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: Path,
                          columns: Sequence[str] = ("input", "translated", "reconstructed")
                          ) -> Path:
    """One row per tile: its images side by side (``(h, w, 3)`` in [0, 1]), PNG at ``path``.

    Uses a bare :class:`matplotlib.figure.Figure` (no pyplot state, no display).
    """
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_cols = max(len(images) for _, images in rows)
    fig = Figure(figsize=(2.2 * n_cols, 2.2 * len(rows)))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(images):
                ax.imshow(np.clip(images[c], 0, 1))
                ax.set_title(f"{label}: {columns[c]}" if c < len(columns) else label,
                             fontsize=7)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    tmp.replace(path)
    return path
