"""How the engine runs a model: tile geometry, batching, blending and output handling.

:class:`EngineOptions` is what stays the same from one call of
:func:`~napari_neuroseg.engine.predict.predict_region` to the next for one model on one image
(as MONAI's ``SlidingWindowInferer`` holds its options): what changes per call (the image,
predictor, region, cache, callbacks, world geometry) stays an argument. Build it once from a
:class:`~napari_neuroseg.models.spec.ModelSpec` with :meth:`EngineOptions.from_spec`, or by
hand; :func:`dataclasses.replace` makes a variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_neuroseg.engine.choices import Activation, BlendMode, OutputMode
from napari_neuroseg.engine.compute import PreprocessStep, TileFilter
from napari_neuroseg.engine.errors import EngineError
from napari_neuroseg.engine.tiling import TileGrid

if TYPE_CHECKING:  # only its fields are read: importing models would import torch
    from napari_neuroseg.models.spec import ModelSpec

__all__ = ["EngineOptions"]


def _size(patch_size: Any) -> tuple[int, int]:
    if isinstance(patch_size, int):
        return (patch_size, patch_size)
    size = tuple(int(s) for s in patch_size)
    if len(size) != 2:
        raise EngineError(f"patch_size must be an int or (height, width), got {patch_size!r}")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class EngineOptions:
    """Options of one model's tile inference, fixed for every call on one image.

    Parameters
    ----------
    patch_size : int or (int, int)
        Predictor input size, halo included (an int means a square patch).
    halo : int
        Context pixels on each side of a patch that are cropped from its output. A predictor
        whose receptive field fits in the halo stitches exactly (no seams).
    overlap : int
        How much neighbouring tile windows overlap (stride = patch - 2 halo - overlap).
    batch_size : int
        Tiles per predictor call.
    blend : BlendMode or str
        Weights where tile windows overlap; ``"none"`` writes only the tiles' cores.
    mode : OutputMode or str
        ``"dense"``: outputs per pixel; ``"tile"``: one output per tile broadcast over its
        window.
    activation : Activation or str
        Applied to each tile's outputs over K before blending.
    n_outputs : int, optional
        Expected K (checked; also the shape when every tile is skipped, default 1).
    threshold : float, optional
        Label threshold for K == 1 (default 0.5) or K == 2 (see
        :func:`~napari_neuroseg.engine.aggregate.labels_from_probabilities`).
    preprocess : sequence of callable
        ``step(patch) -> patch`` on each raw ``"yx"`` / ``"yxc"`` patch, before float32 CHW.
    tile_filter : callable, optional
        ``tile_filter(tile) -> bool``: False skips the tile (e.g. no tissue).

    Raises
    ------
    EngineError
        (a ``ValueError``) An unknown blend mode, mode or activation, a patch size that is
        not one or two integers, a negative halo or overlap, or a batch size below 1.

    Notes
    -----
    String choices are stored as their enum members (``options.blend is BlendMode.NONE``);
    members compare equal to their strings.
    """

    patch_size: tuple[int, int]
    halo: int = 0
    overlap: int = 0
    batch_size: int = 8
    blend: BlendMode = BlendMode.GAUSSIAN
    mode: OutputMode = OutputMode.DENSE
    activation: Activation = Activation.NONE
    n_outputs: int | None = None
    threshold: float | None = None
    preprocess: tuple[PreprocessStep, ...] = ()
    tile_filter: TileFilter | None = None

    def __post_init__(self) -> None:
        fixed = {
            "patch_size": _size(self.patch_size),
            "blend": BlendMode.parse(self.blend),
            "mode": OutputMode.parse(self.mode),
            "activation": Activation.parse(self.activation),
            "preprocess": tuple(self.preprocess),
        }
        for name, value in fixed.items():
            object.__setattr__(self, name, value)
        if self.halo < 0 or self.overlap < 0:
            raise EngineError(f"halo ({self.halo}) and overlap ({self.overlap}) must be >= 0")
        if self.batch_size < 1:
            raise EngineError(f"batch_size must be at least 1, got {self.batch_size}")

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        *,
        batch_size: int = 8,
        n_outputs: int | None = None,
        preprocess: Sequence[PreprocessStep] = (),
        tile_filter: TileFilter | None = None,
    ) -> EngineOptions:
        """The options ``spec`` asks for.

        Tile classifiers (``task="tile_classification"``) run in ``"tile"`` mode with a
        constant blend (the sliding-window average of their probabilities), other models in
        ``"dense"`` mode with a gaussian blend. The spec's ``extra["stride"]`` sets the
        overlap (stride = patch - 2 * halo - overlap), else ``extra["overlap"]`` (0 by
        default). A one-output model (one class) gets the spec's ``threshold``; others take
        the argmax. Outputs go through no activation (the
        :class:`~napari_neuroseg.models.runner.ModelRunner` applies the spec's).

        Parameters
        ----------
        spec : ModelSpec
            The model.
        batch_size, n_outputs, preprocess, tile_filter
            As in :class:`EngineOptions`; they depend on the predictor and the image, not on
            the spec.

        Returns
        -------
        EngineOptions
        """
        tiles = spec.task == "tile_classification"
        patch, halo = spec.input.patch_size, spec.input.halo
        overlap = int(spec.extra.get("overlap", 0))
        if "stride" in spec.extra:
            overlap = patch[0] - 2 * halo - int(spec.extra["stride"])
        return cls(
            patch_size=patch,
            halo=halo,
            overlap=overlap,
            batch_size=batch_size,
            blend=BlendMode.CONSTANT if tiles else BlendMode.GAUSSIAN,
            mode=OutputMode.TILE if tiles else OutputMode.DENSE,
            n_outputs=n_outputs,
            threshold=spec.threshold if spec.n_classes == 1 else None,
            preprocess=tuple(preprocess),
            tile_filter=tile_filter,
        )

    def grid(self, image_shape: Sequence[int]) -> TileGrid:
        """The tile grid of a ``(height, width)`` image with these options' geometry.

        Raises
        ------
        EngineError
            A patch that leaves no core (patch_size <= 2 * halo + overlap), an empty image.
        """
        return TileGrid(tuple(image_shape[:2]), self.patch_size, self.halo, self.overlap)
