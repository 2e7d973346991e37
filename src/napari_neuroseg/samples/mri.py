"""Synthetic brain MRI: a skull-stripped phantom with a FLAIR-hyperintense lesion.

Synthetic data, not a patient: an ellipsoidal brain (grey matter rim, white matter core,
two ventricles) with one lesion over a few slices, in three channels like the Kaggle LGG
set (pre-contrast T1, FLAIR, post-contrast T1) and a 0/255 mask of the lesion. Writers put
it in the Kaggle LGG layout, a NIfTI file or a TIFF stack, for tests, the npe2 sample data
and the demo.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter

from napari_neuroseg.io._atomic import atomic_directory, atomic_path

__all__ = [
    "SAMPLE_PATIENT_ID",
    "make_sample_mri",
    "mri_phantom",
    "write_lgg_patient",
    "write_nifti_volume",
    "write_tiff_stack",
]

#: Patient id of the sample folder written by :func:`make_sample_mri` (SYNTH: synthetic).
SAMPLE_PATIENT_ID = "SYNTH_MR_0001_20000101"
_SAMPLE_SLICES = 24
_SAMPLE_SIZE = 256

# Tissue intensities (uint8) per channel: pre-contrast T1, FLAIR, post-contrast T1.
_GREY = (95.0, 115.0, 100.0)
_WHITE = (130.0, 90.0, 135.0)
_CSF = (35.0, 25.0, 40.0)
_LESION = (80.0, 215.0, 95.0)
_RIM = (0.0, 0.0, 70.0)  # extra post-contrast signal at the lesion edge


def mri_phantom(
    n_slices: int = 20, size: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A brain-MRI-like phantom volume and its lesion mask.

    Parameters
    ----------
    n_slices : int
        Number of axial slices (from the bottom to the top of the brain).
    size : int
        Height and width of every slice.
    seed : int
        Seed of the lesion position and the noise.

    Returns
    -------
    image : numpy.ndarray
        ``(n_slices, size, size, 3)`` uint8: pre-contrast, FLAIR, post-contrast.
    mask : numpy.ndarray
        ``(n_slices, size, size)`` uint8, 255 in the lesion (FLAIR abnormality), else 0.
    """
    if n_slices < 1 or size < 16:
        raise ValueError(f"need n_slices >= 1 and size >= 16, got {n_slices}, {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    centre = (
        rng.uniform(0.35, 0.65) * (n_slices - 1),
        rng.uniform(-0.35, 0.15),
        rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.4),
    )
    radius_z = max(1.2, n_slices / 8)
    image = np.zeros((n_slices, size, size, 3), np.uint8)
    mask = np.zeros((n_slices, size, size), np.uint8)
    for k in range(n_slices):
        height = -0.9 + 1.8 * k / max(1, n_slices - 1)  # -1 bottom .. 1 top of the brain
        texture = gaussian_filter(rng.normal(size=(size, size)), sigma=size / 32)
        texture /= max(float(np.abs(texture).max()), 1e-6)
        dz = (k - centre[0]) / radius_z
        lesion_r = ((yy - centre[1]) / 0.17) ** 2 + ((xx - centre[2]) / 0.14) ** 2 + dz**2
        lesion = lesion_r <= 1 + 0.3 * texture
        tissue = _tissue_slice(xx, yy, height, lesion, lesion_r)
        noise = rng.normal(scale=4.0, size=(size, size, 3)) + 8.0 * texture[..., np.newaxis]
        image[k] = np.clip(tissue + noise * (tissue > 0), 0, 255).astype(np.uint8)
        mask[k] = np.where(lesion & (tissue[..., 0] > 0), 255, 0)
    return image, mask


def _tissue_slice(
    xx: np.ndarray, yy: np.ndarray, height: float, lesion: np.ndarray, lesion_r: np.ndarray
) -> np.ndarray:
    """Noise-free intensities ``(size, size, 3)`` of one slice at ``height`` in [-1, 1]."""
    brain = (xx / 0.7) ** 2 + (yy / 0.85) ** 2 + height**2 <= 1
    white = (xx / 0.5) ** 2 + (yy / 0.62) ** 2 + (height / 0.75) ** 2 <= 1
    ventricle = (np.abs(height) < 0.35) & (
        ((np.abs(xx) - 0.12) / 0.06) ** 2 + ((yy + 0.05) / 0.22) ** 2 <= 1
    )
    out = np.zeros((*xx.shape, 3))
    out[brain] = _GREY
    out[white & brain] = _WHITE
    out[ventricle & brain] = _CSF
    out[lesion & brain] = _LESION
    rim = lesion & brain & (lesion_r > 0.6)
    out[rim] += _RIM
    return out


def write_lgg_patient(
    directory: str | os.PathLike[str],
    *,
    patient_id: str = "TCGA_XX_0000_20000101",
    n_slices: int = 20,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a phantom patient in the Kaggle LGG layout.

    Files ``<id>_<n>.tif`` (size x size x 3 uint8, RGB photometric like the Kaggle files)
    and ``<id>_<n>_mask.tif`` (0/255), numbered 1..n_slices (so a string sort misorders
    them from 10 slices on), in the folder ``directory/<patient_id>``, written atomically.

    Parameters
    ----------
    directory : str or os.PathLike
        Parent folder (created if needed).
    patient_id : str
        Patient id, the prefix of every file name.
    n_slices, size, seed : int
        As in :func:`mri_phantom`.

    Returns
    -------
    pathlib.Path
        The patient folder.
    """
    image, mask = mri_phantom(n_slices, size, seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / patient_id
    with atomic_directory(target) as tmp:
        for n in range(1, n_slices + 1):
            tifffile.imwrite(tmp / f"{patient_id}_{n}.tif", image[n - 1], photometric="rgb")
            tifffile.imwrite(tmp / f"{patient_id}_{n}_mask.tif", mask[n - 1])
    return target


def write_nifti_volume(
    path: str | os.PathLike[str],
    *,
    data: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    n_slices: int = 16,
    size: int = 48,
    zooms: tuple[float, float, float] = (1.0, 1.0, 2.5),
    seed: int = 0,
) -> Path:
    """Write a NIfTI-1 file (``.nii`` or ``.nii.gz``) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file.
    data : numpy.ndarray, optional
        Voxels in file order (i, j, k[, t]). By default the phantom's FLAIR channel as int16,
        shape ``(size, size, n_slices)``, voxel axes pointing Right, Anterior, Superior.
    affine : numpy.ndarray, optional
        4x4 voxel-to-RAS affine; by default ``diag(zooms)`` centred on the volume.
    n_slices, size, seed : int
        Phantom size and seed when ``data`` is None.
    zooms : tuple of float
        Voxel size (mm) of the default affine.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if data is None:
        flair = mri_phantom(n_slices, size, seed)[0][..., 1].astype(np.int16)
        data = flair[:, ::-1, ::-1].transpose(2, 1, 0)  # (S, P, L) display -> (R, A, S) voxels
    if affine is None:
        affine = np.diag([*zooms, 1.0])
        affine[:3, 3] = -(np.array(data.shape[:3]) - 1) / 2 * np.array(zooms)
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    payload = img.to_bytes()
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def write_tiff_stack(
    path: str | os.PathLike[str],
    *,
    data: np.ndarray | None = None,
    n_slices: int = 12,
    size: int = 64,
    channels: int = 1,
    spacing: tuple[float, float, float] | None = (2.0, 0.5, 0.5),
    unit: str = "mm",
    imagej: bool = True,
    seed: int = 0,
) -> Path:
    """Write a multi-page TIFF stack atomically (ImageJ hyperstack by default).

    Parameters
    ----------
    path : str or os.PathLike
        Target file.
    data : numpy.ndarray, optional
        ``(z, y, x)`` or ``(z, y, x, c)``. By default the phantom: its FLAIR channel
        (``channels=1``) or all three channels (``channels=3``).
    n_slices, size, seed : int
        Phantom size and seed when ``data`` is None.
    channels : {1, 3}
        Channels of the default phantom.
    spacing : tuple of float or None
        Voxel size ``(z, y, x)`` in ``unit``; None writes no size at all.
    unit : str
        Unit of ``spacing`` as ImageJ writes it (``"mm"``, ``"micron"``, ...).
    imagej : bool
        ImageJ hyperstack (``spacing``/``unit`` in the ImageJ description) or a plain
        tifffile stack (resolution tags in cm and ``spacing`` in its JSON description).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if data is None:
        image = mri_phantom(n_slices, size, seed)[0]
        data = image[..., 1] if channels == 1 else image
    data = np.asarray(data)
    path = Path(path)
    with atomic_path(path) as tmp:
        if imagej:
            _write_imagej(tmp, data, spacing, unit)
        else:
            _write_plain(tmp, data, spacing, unit)
    return path


def _write_imagej(tmp: Path, data: np.ndarray, spacing: tuple | None, unit: str) -> None:
    """ImageJ hyperstack; channels stored as ImageJ channels (``ZCYX``)."""
    axes = "ZYX" if data.ndim == 3 else "ZCYX"
    stack = data if data.ndim == 3 else np.moveaxis(data, -1, 1)
    kwargs: dict = {"metadata": {"axes": axes}}
    if spacing is not None:
        kwargs = {
            "metadata": {"axes": axes, "spacing": spacing[0], "unit": unit},
            "resolution": (1 / spacing[2], 1 / spacing[1]),
        }
    tifffile.imwrite(tmp, stack, imagej=True, **kwargs)


def _write_plain(tmp: Path, data: np.ndarray, spacing: tuple | None, unit: str) -> None:
    """tifffile stack: resolution tags in cm, z spacing in the JSON description."""
    rgb = data.ndim == 4
    metadata: dict = {"axes": "ZYXS" if rgb else "ZYX"}
    kwargs: dict = {}
    if spacing is not None:
        cm = {"mm": 0.1, "micron": 1e-4, "um": 1e-4, "cm": 1.0}[unit]
        metadata.update(spacing=spacing[0], unit=unit)
        kwargs = {
            "resolution": (1 / (spacing[2] * cm), 1 / (spacing[1] * cm)),
            "resolutionunit": "CENTIMETER",
        }
    photometric = "rgb" if rgb else "minisblack"
    tifffile.imwrite(tmp, data, photometric=photometric, metadata=metadata, **kwargs)


def make_sample_mri(directory: str | os.PathLike[str]) -> Path:
    """The sample patient folder (24 slices of 256x256), written on first use, then reused.

    Parameters
    ----------
    directory : str or os.PathLike
        Cache folder (created if needed).

    Returns
    -------
    pathlib.Path
        ``directory/SYNTH_MR_0001_20000101``, a Kaggle-LGG-layout patient folder.
    """
    folder = Path(directory) / SAMPLE_PATIENT_ID
    expected = {
        f"{SAMPLE_PATIENT_ID}_{n}{end}.tif"
        for n in range(1, _SAMPLE_SLICES + 1)
        for end in ("", "_mask")
    }
    if folder.is_dir() and expected <= set(os.listdir(folder)):
        return folder
    return write_lgg_patient(
        directory,
        patient_id=SAMPLE_PATIENT_ID,
        n_slices=_SAMPLE_SLICES,
        size=_SAMPLE_SIZE,
        seed=2024,
    )
