"""HoVer-Net post-processing: nuclear probability + h/v maps -> instance labels.

Marker-controlled watershed as in Graham et al. (2019) and their reference code, without
OpenCV:

1. foreground ``F = np_prob >= np_threshold`` (connected components smaller than ``min_size``
   removed);
2. ``h`` and ``v`` min-max normalised to ``[0, 1]``; ``S_h = d h / dx``, ``S_v = d v / dy`` with
   OpenCV-style Sobel kernels of size ``ksize``; each min-max normalised and inverted
   (``1 - S``), so the steep *decreases* of h and v between touching nuclei and at nucleus
   borders become values near 1;
3. ``E = max(S_h, S_v)`` restricted to ``F``; distance ``D = -gauss((1 - E) * F)``;
4. markers = ``F AND (E < marker_threshold)``, holes filled, opened with a disc of radius
   ``marker_radius`` (2 in the paper, at 0.25 µm/px), labelled, small ones removed;
5. ``watershed(D, markers, mask=F)``; with ``keep_unmarked`` every foreground component that
   received no marker becomes an instance of its own (the paper's code drops it: at 0.5 µm/px
   a nucleus of radius 3-4 px often loses its whole marker to the opening), then instances
   smaller than ``min_size`` removed.

:class:`PostprocessOptions` holds these options for one model: its defaults are the ones the
``nuclei`` training task uses, and a checkpoint saves its tuned values in the spec's
``extra["postprocess"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.special import comb
from skimage.morphology import disk
from skimage.segmentation import watershed

from napari_neuroseg.models.spec import ModelSpec


@dataclass(frozen=True)
class PostprocessOptions:
    """:func:`hovernet_instances` keywords for one model, checked when built.

    Parameters
    ----------
    np_threshold, marker_threshold : float
        In [0, 1].
    min_size, ksize, marker_radius, keep_unmarked
        As in :func:`hovernet_instances`; ``ksize`` odd and at least 3. ``ksize`` 11 (not
        the paper's 21) suits nuclei at 0.5 µm/px.

    Raises
    ------
    ValueError
        ``ksize`` not odd and >= 3, or a threshold outside [0, 1].
    """

    np_threshold: float = 0.5
    marker_threshold: float = 0.4
    min_size: int = 10
    ksize: int = 11
    marker_radius: int = 2
    keep_unmarked: bool = False

    def __post_init__(self) -> None:
        if int(self.ksize) < 3 or int(self.ksize) % 2 == 0:
            raise ValueError(f"ksize must be an odd integer >= 3, got {self.ksize}")
        for key in ("np_threshold", "marker_threshold"):
            if not 0.0 <= float(getattr(self, key)) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(self, key)}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in :func:`hovernet_instances`' order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_spec(cls, spec: ModelSpec | None,
                  overrides: Mapping[str, Any] | None = None) -> PostprocessOptions:
        """``overrides``, else the spec's saved ``extra["postprocess"]``, else the defaults.

        Keys that are not options are ignored in both.
        """
        saved = dict((spec.extra if spec is not None else {}).get("postprocess") or {})
        saved.update(overrides or {})
        return cls(**{key: saved[key] for key in cls.names() if key in saved})

    def as_dict(self) -> dict[str, Any]:
        """The keywords of :func:`hovernet_instances`."""
        return asdict(self)


def hovernet_instances(
    np_prob: np.ndarray,
    hv: np.ndarray,
    *,
    np_threshold: float = 0.5,
    marker_threshold: float = 0.4,
    min_size: int = 10,
    ksize: int = 21,
    marker_radius: int = 2,
    keep_unmarked: bool = False,
) -> np.ndarray:
    """Instance labels from HoVer-Net's nuclear-pixel and h/v outputs.

    Parameters
    ----------
    np_prob : numpy.ndarray, shape (H, W)
        Nucleus probability (softmax channel 1 of the ``"np"`` branch).
    hv : numpy.ndarray, shape (2, H, W)
        Horizontal (channel 0) and vertical (channel 1) maps of the ``"hv"`` branch.
    np_threshold : float
        Foreground threshold on ``np_prob``.
    marker_threshold : float
        Pixels whose normalised h/v edge energy is below this seed the watershed.
    min_size : int
        Connected components, markers and final instances smaller than this many pixels are
        removed.
    ksize : int
        Odd Sobel kernel size; larger values smooth the h/v gradients more (21 in the paper,
        at 0.25 µm/px; scale it with the nucleus size in pixels).
    marker_radius : int
        Radius of the disc the markers are opened with (0: no opening); scale it with the
        nucleus size in pixels too.
    keep_unmarked : bool
        Keep foreground components without a marker as instances instead of dropping them.

    Returns
    -------
    numpy.ndarray of int32, shape (H, W)
        0 background, 1..n instances (consecutive).
    """
    prob = np.asarray(np_prob, dtype=np.float64)
    maps = np.asarray(hv, dtype=np.float64)
    if prob.ndim != 2 or maps.shape != (2, *prob.shape):
        raise ValueError(
            f"hovernet_instances needs np_prob (H, W) and hv (2, H, W); got {prob.shape} and "
            f"{maps.shape}"
        )
    if ksize < 3 or ksize % 2 == 0:
        raise ValueError(f"ksize must be an odd integer >= 3, got {ksize}")
    foreground = remove_small_objects(ndi.label(prob >= np_threshold)[0], min_size) > 0
    if not foreground.any():
        return np.zeros(prob.shape, dtype=np.int32)
    energy = hv_edge_energy(maps, ksize) * foreground
    distance = -ndi.gaussian_filter((1.0 - energy) * foreground, sigma=0.8, truncate=1.25)
    markers = foreground & (energy < marker_threshold)
    markers = ndi.binary_fill_holes(markers)
    if marker_radius > 0:
        markers = ndi.binary_opening(markers, structure=disk(int(marker_radius)))
    markers = remove_small_objects(ndi.label(markers)[0], min_size)
    labels = watershed(distance, markers=markers, mask=foreground)
    if keep_unmarked:
        orphans, _ = ndi.label(foreground & (labels == 0))
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return _relabel_consecutive(remove_small_objects(labels, min_size))


def hv_edge_energy(hv: np.ndarray, ksize: int = 21) -> np.ndarray:
    """``max(1 - norm(d h / dx), 1 - norm(d v / dy))``: near 1 between and around nuclei.

    Parameters
    ----------
    hv : numpy.ndarray, shape (2, H, W)
    ksize : int
        Odd Sobel kernel size.

    Returns
    -------
    numpy.ndarray of float64, shape (H, W), values in ``[0, 1]``.
    """
    h_dir, v_dir = (_minmax(np.asarray(channel, dtype=np.float64)) for channel in hv)
    sobel_h = 1.0 - _minmax(sobel(h_dir, axis=1, ksize=ksize))
    sobel_v = 1.0 - _minmax(sobel(v_dir, axis=0, ksize=ksize))
    return np.maximum(sobel_h, sobel_v)


def sobel(image: np.ndarray, axis: int, ksize: int = 3) -> np.ndarray:
    """OpenCV-compatible Sobel derivative of order 1 along ``axis`` (0 rows, 1 columns).

    The kernel is separable: along ``axis`` the binomial row of length ``ksize - 2``
    convolved with ``[-1, 0, 1]``; across it the binomial row of length ``ksize``
    (``ksize=3``: ``[-1, 0, 1]`` and ``[1, 2, 1]``). Borders are mirrored (OpenCV's
    ``BORDER_REFLECT_101``).
    """
    derivative = np.convolve(_binomial(ksize - 2), [-1.0, 0.0, 1.0])
    smooth = _binomial(ksize)
    out = ndi.correlate1d(image, derivative, axis=axis, mode="mirror")
    return ndi.correlate1d(out, smooth, axis=1 - axis, mode="mirror")


def instance_types(instances: np.ndarray, tp_prob: np.ndarray) -> dict[int, int]:
    """Type of each instance by majority vote of the per-pixel type.

    Parameters
    ----------
    instances : numpy.ndarray of int, shape (H, W)
        Instance labels (0 background).
    tp_prob : numpy.ndarray, shape (T, H, W)
        Type probabilities or logits of the ``"tp"`` branch (type 0 = background).

    Returns
    -------
    dict
        ``{instance id: type}``. Type 0 (background) only wins when no pixel of the instance
        votes for a nucleus type, as in the paper's code.
    """
    labels = np.asarray(instances)
    probs = np.asarray(tp_prob)
    if probs.ndim != 3 or probs.shape[1:] != labels.shape:
        raise ValueError(
            f"instance_types needs tp_prob (T, H, W) matching instances {labels.shape}, "
            f"got {probs.shape}"
        )
    n_types = probs.shape[0]
    pixel_type = probs.argmax(axis=0)
    inside = labels > 0
    ids, inverse = np.unique(labels[inside], return_inverse=True)
    votes = np.bincount(
        inverse * n_types + pixel_type[inside], minlength=ids.size * n_types
    ).reshape(ids.size, n_types)
    nucleus_votes = votes[:, 1:]
    best = np.where(nucleus_votes.max(axis=1) > 0, nucleus_votes.argmax(axis=1) + 1, 0)
    return {int(i): int(t) for i, t in zip(ids, best, strict=True)}


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Copy of ``labels`` with labels of fewer than ``min_size`` pixels set to 0."""
    labels = np.asarray(labels)
    if min_size <= 1 or not labels.any():
        return labels.copy()
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def _relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int32)


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _binomial(length: int) -> np.ndarray:
    return comb(length - 1, np.arange(length)).astype(np.float64)
