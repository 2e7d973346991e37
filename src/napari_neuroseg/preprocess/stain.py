"""Macenko stain normalisation for H&E (the LGG tissue recipe, docs/training-recipes.md), fitted
once per slide, applied per tile.

Macenko et al., "A method for normalizing histology slides for quantitative analysis",
ISBI 2009. Colours are mapped to optical density ``OD = -log(I / Io)``; pixels with OD below
``beta`` in any channel are transparent and ignored; the stain vectors are the directions at
the ``alpha`` and ``100 - alpha`` angle percentiles in the plane of the two main eigenvectors
of the OD covariance; concentrations are least-squares solutions, scaled so that their 99th
percentiles match the target's (the estimate: :mod:`napari_neuroseg.preprocess.stain_estimate`).
The default target is the H&E reference of the common Macenko implementations. Fitting and
mapping in numpy; :meth:`MacenkoNormalizer.transform_torch`
does the same mapping in torch on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_neuroseg.preprocess.stain_estimate import estimate_stains, optical_density
from napari_neuroseg.preprocess.tissue import lowres_level
from napari_neuroseg.preprocess.tissue import tissue_mask as hsv_tissue_mask

if TYPE_CHECKING:
    import torch

__all__ = [
    "HE_REFERENCE",
    "MAX_CONCENTRATIONS_REFERENCE",
    "MacenkoNormalizer",
]

#: Reference H&E stain vectors (rows: hematoxylin, eosin; unit OD vectors in R, G, B).
HE_REFERENCE = ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
#: Reference 99th-percentile concentrations of hematoxylin and eosin.
MAX_CONCENTRATIONS_REFERENCE = (1.9705, 1.0308)
#: Arrays of a :meth:`MacenkoNormalizer.to_dict` record and their shapes.
_RECORD_ARRAYS = (
    ("stain_matrix", (2, 3)),
    ("max_concentrations", (2,)),
    ("target_stain_matrix", (2, 3)),
    ("target_max_concentrations", (2,)),
)
#: Pixels per block in the numpy transform: temporaries stay in cache, and BLAS stays
#: single-threaded (larger blocks were up to 10x slower with 2 busy cores).
_BLOCK = 1 << 14


class MacenkoNormalizer:
    """Macenko stain normaliser: fit on a source (once per slide), map tiles to a target.

    Parameters
    ----------
    io : float, optional
        Transmitted light intensity (240 in the common Macenko implementations; staintools
        uses 255). Normalised background comes out at about this value.
    alpha : float, optional
        Angle percentile of the stain directions.
    beta : float, optional
        OD threshold below which a pixel is transparent.

    Examples
    --------
    >>> normalizer = MacenkoNormalizer().fit_slide(image.levels)
    >>> tile = normalizer.transform(tile_rgb)           # numpy, uint8 out
    >>> batch = normalizer.transform_torch(tensor_nchw)  # torch, same device
    """

    def __init__(self, *, io: float = 240.0, alpha: float = 1.0, beta: float = 0.15) -> None:
        if not (io > 0 and 0 <= alpha < 50 and beta >= 0):
            raise ValueError(f"need io > 0, 0 <= alpha < 50, beta >= 0; got {io}, {alpha}, {beta}")
        self.io, self.alpha, self.beta = float(io), float(alpha), float(beta)
        self.stain_matrix: np.ndarray | None = None
        self.max_concentrations: np.ndarray | None = None
        self.target_stain_matrix = np.array(HE_REFERENCE)
        self.target_max_concentrations = np.array(MAX_CONCENTRATIONS_REFERENCE)

    @property
    def is_fitted(self) -> bool:
        """Whether a source stain matrix has been estimated."""
        return self.stain_matrix is not None

    def _estimate(self, rgb: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return estimate_stains(rgb, mask, io=self.io, alpha=self.alpha, beta=self.beta)

    def fit(self, rgb: np.ndarray, tissue_mask: np.ndarray | None = None) -> MacenkoNormalizer:
        """Estimate the source stains from an RGB image.

        Parameters
        ----------
        rgb : numpy.ndarray
            ``(H, W, 3)`` uint8 RGB (a tile, or a whole low-resolution level).
        tissue_mask : numpy.ndarray, optional
            ``(H, W)`` bool; only these pixels are used.

        Returns
        -------
        MacenkoNormalizer
            ``self``.
        """
        self.stain_matrix, self.max_concentrations = self._estimate(rgb, tissue_mask)
        return self

    def fit_slide(self, levels: Sequence[Any], max_size: int = 2048) -> MacenkoNormalizer:
        """Fit once per slide on a low-resolution level, restricted to the HSV tissue mask.

        Parameters
        ----------
        levels : sequence of dask.array.Array or numpy.ndarray
            Slide levels, full resolution first, ``"yxc"`` uint8 (``LazyImage.levels``).
            Only the first level whose long side is at most ``max_size`` is computed.
        max_size : int, optional
            Largest long side of the level to fit on.

        Returns
        -------
        MacenkoNormalizer
            ``self``.
        """
        image, _ = lowres_level(levels, max_size)
        return self.fit(image, hsv_tissue_mask(image))

    def set_target(self, rgb: np.ndarray, tissue_mask: np.ndarray | None = None
                   ) -> MacenkoNormalizer:
        """Fit the target stains on a reference image instead of the H&E reference values.

        As :meth:`fit`, with ``rgb`` an image of the wanted staining; returns ``self``.
        """
        self.target_stain_matrix, self.target_max_concentrations = self._estimate(rgb, tissue_mask)
        return self

    def od_mapping(self) -> np.ndarray:
        """The fitted map in OD space: ``OD_out = OD_in @ M`` (a 3 x 3 matrix).

        Least-squares concentrations ``OD @ pinv(S_src)``, scaled per stain by
        ``maxC_target / maxC_source``, recoloured with ``S_target``.
        """
        if not self.is_fitted:
            raise RuntimeError("MacenkoNormalizer is not fitted: call fit(), fit_slide() or "
                               "from_dict() before transform()")
        scale = self.target_max_concentrations / self.max_concentrations
        return (np.linalg.pinv(self.stain_matrix) * scale) @ self.target_stain_matrix

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        """Normalise one tile ``(H, W, 3)`` or a batch ``(N, H, W, 3)`` (numpy).

        Parameters
        ----------
        rgb : numpy.ndarray
            RGB in 0-255 (uint8, or any real dtype), channels last.

        Returns
        -------
        numpy.ndarray
            uint8, same shape; the input is not modified.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
            raise ValueError(f"transform needs (H, W, 3) or (N, H, W, 3) RGB, got {rgb.shape}")
        mapping = self.od_mapping().astype(np.float32)
        lut = _od_table(self.io) if rgb.dtype == np.uint8 else None
        out = np.empty(rgb.shape, dtype=np.uint8)
        pixels, result = rgb.reshape(-1, 3), out.reshape(-1, 3)
        for start in range(0, len(pixels), _BLOCK):
            block = pixels[start:start + _BLOCK]
            od = lut[block] if lut is not None else _od_float32(block, self.io)
            result[start:start + _BLOCK] = _od_to_uint8(od @ mapping, self.io)
        return out

    def transform_torch(
        self, images: torch.Tensor, *, channels_last: bool | None = None,
        value_range: float = 255.0,
    ) -> torch.Tensor:
        """Normalise a torch batch on its own device (CPU or GPU).

        Parameters
        ----------
        images : torch.Tensor
            ``(N, 3, H, W)`` or ``(N, H, W, 3)`` (or one image without ``N``); uint8, or
            floating point in ``[0, value_range]``.
        channels_last : bool, optional
            Layout; by default the axis of size 3 (an error when both could be).
        value_range : float, optional
            Intensity of white for floating-point input (255, or 1.0 for ``[0, 1]`` tensors).

        Returns
        -------
        torch.Tensor
            Same shape, device and dtype; uint8 rounded, floats in ``[0, value_range]``.
        """
        import torch

        last = _channels_last(images.shape, channels_last)
        mapping = torch.as_tensor(self.od_mapping(), dtype=torch.float32, device=images.device)
        with torch.no_grad():
            pixels = images.movedim(-1, -3) if last else images
            out = _map_channels_first(pixels, mapping, self.io, value_range).reshape(pixels.shape)
            out = out.movedim(-3, -1) if last else out
            if images.dtype == torch.uint8:
                return out.round_().to(torch.uint8).contiguous()
            return out.mul_(value_range / 255.0).to(images.dtype).contiguous()

    def to_dict(self) -> dict[str, Any]:
        """The fitted parameters as JSON-friendly data (see :meth:`from_dict`)."""

        def listed(array: np.ndarray | None) -> list | None:
            return None if array is None else np.asarray(array, dtype=float).tolist()

        return {
            "method": "macenko",
            "io": self.io,
            "alpha": self.alpha,
            "beta": self.beta,
            "stain_matrix": listed(self.stain_matrix),
            "max_concentrations": listed(self.max_concentrations),
            "target_stain_matrix": listed(self.target_stain_matrix),
            "target_max_concentrations": listed(self.target_max_concentrations),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MacenkoNormalizer:
        """Rebuild a normaliser from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If the data is not a Macenko record or an array has the wrong shape.
        """
        if data.get("method") != "macenko":
            raise ValueError(f"not a Macenko stain record: method={data.get('method')!r}")
        new = cls(io=data.get("io", 240.0), alpha=data.get("alpha", 1.0),
                  beta=data.get("beta", 0.15))
        for name, shape in _RECORD_ARRAYS:
            setattr(new, name, _checked(data.get(name), shape, name))
        if new.target_stain_matrix is None or new.target_max_concentrations is None:
            raise ValueError("Macenko record has no target_stain_matrix/target_max_concentrations")
        return new


def _checked(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape or not np.all(np.isfinite(array)):
        raise ValueError(f"Macenko record: {name} must be finite with shape {shape}, "
                         f"got {array.shape}")
    return array


def _od_table(io: float) -> np.ndarray:
    """OD of every uint8 intensity (a 256-entry lookup table)."""
    return optical_density(np.arange(256), io).astype(np.float32)


def _od_float32(block: np.ndarray, io: float) -> np.ndarray:
    return -np.log(np.maximum(block.astype(np.float32), 1.0) / np.float32(io))


def _od_to_uint8(od: np.ndarray, io: float) -> np.ndarray:
    np.negative(od, out=od)
    np.exp(od, out=od)
    od *= np.float32(io)
    np.clip(od, 0.0, 255.0, out=od)
    return np.rint(od, out=od)


def _map_channels_first(
    pixels: torch.Tensor, mapping: torch.Tensor, io: float, value_range: float
) -> torch.Tensor:
    """``io * exp(-(M^T OD))`` in 0..255 for ``(..., 3, H, W)`` pixels, as ``(B, 3, H * W)``."""
    import torch

    scale = 1.0 if pixels.dtype == torch.uint8 else 255.0 / value_range
    batch = pixels.reshape(-1, 3, pixels.shape[-2] * pixels.shape[-1])
    # copy=True: a float32 input must not be modified by the in-place steps below.
    od = batch.to(torch.float32, copy=True).mul_(scale / io).clamp_(min=1.0 / io).log_().neg_()
    return torch.matmul(mapping.T, od).neg_().exp_().mul_(io).clamp_(0.0, 255.0)


def _channels_last(shape: Sequence[int], channels_last: bool | None) -> bool:
    if len(shape) not in (3, 4):
        raise ValueError(f"transform_torch needs (N, 3, H, W) or (N, H, W, 3), got {tuple(shape)}")
    first, last = shape[-3] == 3, shape[-1] == 3
    if channels_last is None:
        if first == last:
            raise ValueError(f"cannot tell the channel axis of shape {tuple(shape)}; "
                             "pass channels_last=True or False")
        return last
    if (shape[-1] if channels_last else shape[-3]) != 3:
        raise ValueError(f"shape {tuple(shape)} has no 3 RGB channels where channels_last="
                         f"{channels_last} puts them")
    return channels_last
