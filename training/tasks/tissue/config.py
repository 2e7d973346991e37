"""Options of ``python -m training tissue`` (:class:`Config`) and the LGG tissue recipe's presets:
oversampling rates by class name, the class sets a run can train, the rare classes it tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.config import TrainConfig
from training.losses import make_loss
from training.samplers import LGG_EXTREME_RATES, LGG_IT, LGG_LE, LGG_LE_FOCUSED_RATES
from training.tasks.tissue.data import STAIN_FIT_MODES, TISSUE_MASK_MODES, canonical_class_name

_LGG_NAMES = {LGG_IT: "infiltrating tumour", LGG_LE: "leading edge"}
#: The LGG tissue recipe's oversampling presets, by class name (so they apply to 4 or 8 classes).
OVERSAMPLING = {key: {_LGG_NAMES[c]: r for c, r in rates.items()}
                for key, rates in (("extreme", LGG_EXTREME_RATES),
                                   ("le-focused", LGG_LE_FOCUSED_RATES), ("none", {}))}
RARE_NAMES = ("leading edge", "infiltrating tumour")
#: ``classes`` option: the registry model trained and the class names it predicts.
CLASS_SETS = {"lgg": "lgg-tissue", "gbm": "gbm-tissue-8"}


@dataclass
class Config(TrainConfig):
    """Options of the ``tissue`` task (plus those every task shares).

    Attributes
    ----------
    classes : str
        ``lgg`` (default): the four LGG classes of ``lgg-tissue`` (background, cellular
        tumour, leading edge, infiltrating tumour); a dataset of the 8 GBM regions is folded
        into them (the four other tumour regions become cellular tumour). ``gbm``: the 8
        GBM regions of ``gbm-tissue-8``, trained without a mapping head.
    first_filters, growth_rate, bottleneck_layers : int or None
        FC-DenseNet size of a fresh network (without ``--init``; a checkpoint keeps its own);
        None: the authors' FC-DenseNet103 (48, 16, 15).
    down_blocks : list of int or None
        Dense layers per down block (FC-DenseNet103: 4, 5, 7, 10, 12).
    val_fraction : float
        Share of patients (slides when tiles have no patient) held out for validation; the
        split is stratified by the rarest class of each patient's tiles when possible.
    val_slides : list of str or None
        Hold out exactly these slides (``slide_id``; IvyGAP: the tissue block, ``W3-B``) and
        train on the others; overrides ``val_fraction``.
    crop_size : int or None
        Train on random square crops of this side (GBM_WSSM: 224) drawn from a grid of
        positions ``crop_stride`` apart and shifted at random by up to half a stride;
        validation then runs on whole sections. None: whole tiles (exported tiles).
    crop_stride : int or None
        Grid step of the crops (default: half the crop).
    downscale : int
        Integer factor by which sections are shrunk before cropping (2: the working
        resolution is twice the dataset's µm/px, and the spec records it).
    oversampling : str
        ``extreme`` (the LGG tissue recipe's final run: IT 20x, LE 5x), ``le-focused`` (LE 3x) or
        ``none``. A tile is repeated at the rate of the rarest class it contains.
    presence_share : float
        A sample counts as holding a class for oversampling when the class covers at least
        this share of its pixels (0: any pixel). Crops of whole sections touch a thin
        leading-edge band almost everywhere; a share keeps the repeats for crops that show it.
    it_oversample, le_oversample : float or None
        Override the preset's rate of infiltrating tumour / leading edge tiles.
    phase_layers : list of int or null
        Progressive unfreezing: layers before the head that train in each phase (``0``: head
        only; ``null``: all). The LGG tissue recipe: head, 10, 25, 50, all. ``[null]`` trains
        everything from the start (the write-up's "fully unfrozen" variant).
    phase_epochs : list of int
        Length of each phase (the last lasts to the end). The write-up gives none: 5 each.
    loss : str
        ``ce``, ``focal``, ``dice``, ``ce+dice`` or ``focal+dice``.
    class_weighting : str
        Weights of ``ce``/``focal`` from the effective (oversampled) pixel frequencies:
        ``median`` (median-frequency balancing), ``inverse``, ``inverse_sqrt`` or ``none``.
        The write-up names no loss; weighting the frequencies *after* oversampling corrects the
        imbalance left over without compounding the two.
    class_weights : list of float or None
        Explicit class weights (override ``class_weighting``).
    focal_gamma, dice_weight : float
        Focal loss focusing parameter; weight of the Dice term in combinations.
    stain_normalization : bool
        Macenko normalisation of every tile (the LGG tissue recipe: on).
    stain_reference : str or None
        Item id of the tile whose stains are the target; None: the first training tile.
    stain_fit : str
        Estimate each tile's source stains per ``slide`` (pooled over its tiles, as the
        plugin does per slide at inference) or per ``tile`` (staintools' way; the slide's
        estimate where a tile has too little tissue).
    tissue_mask : str
        What the HSV tissue mask does to annotated non-tissue pixels: ``relabel`` to
        background (the LGG tissue recipe's tissue-aware masks), ``ignore`` (left out of loss and
        metrics) or ``off``.
    saturation_min, value_max : float
        HSV thresholds of tissue (the LGG tissue recipe: saturation > 15, value < 240).
    mask_kernel : int
        Square kernel of the mask's closing and opening (the LGG tissue recipe: 5).
    augment : bool
        Flips, 90 degree turns, small affine and HED stain jitter on training tiles.
    optimizer : str
        ``adam`` (the write-up's Keras default), ``adamw``, ``sgd`` or ``rmsprop`` (GBM_WSSM's).
    precise_bn : bool
        After the last epoch, recompute the batch norms' running statistics over one pass of
        the training samples (no augmentation, no dropout) and save them in the ``last``
        checkpoint, which the final metrics score (:mod:`training.precise_bn`). On
        ``--resume`` of a finished run this is all that runs.
    """

    classes: str = "lgg"
    first_filters: int | None = None
    growth_rate: int | None = None
    down_blocks: tuple[int, ...] | None = None
    bottleneck_layers: int | None = None
    val_fraction: float = 0.2
    val_slides: tuple[str, ...] | None = None
    crop_size: int | None = None
    crop_stride: int | None = None
    downscale: int = 1
    oversampling: str = "extreme"
    presence_share: float = 0.0
    it_oversample: float | None = None
    le_oversample: float | None = None
    phase_layers: tuple[int | None, ...] = (0, 10, 25, 50, None)
    phase_epochs: tuple[int, ...] = (5, 5, 5, 5, 5)
    loss: str = "ce"
    class_weighting: str = "median"
    class_weights: tuple[float, ...] | None = None
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    stain_normalization: bool = True
    stain_reference: str | None = None
    stain_fit: str = "slide"
    tissue_mask: str = "relabel"
    saturation_min: float = 15.0
    value_max: float = 240.0
    mask_kernel: int = 5
    augment: bool = True
    optimizer: str = "adam"
    precise_bn: bool = False
    epochs: int = 25
    lr: float = 1e-4
    monitor: str = "mean_dice"
    mode: str = "max"


def oversampling_rates(config: Config, names: tuple[str, ...]) -> dict[int, float]:
    """Oversampling rates by class id of ``names`` (the trained classes).

    Raises
    ------
    ValueError
        An unknown ``oversampling`` preset.
    """
    if config.oversampling not in OVERSAMPLING:
        raise ValueError(f"oversampling must be one of {sorted(OVERSAMPLING)}, not "
                         f"{config.oversampling!r}")
    by_name = dict(OVERSAMPLING[config.oversampling])
    for name, rate in (("infiltrating tumour", config.it_oversample),
                       ("leading edge", config.le_oversample)):
        if rate is not None:
            by_name[name] = float(rate)
    canonical = [canonical_class_name(n) for n in names]
    return {canonical.index(n): r for n, r in by_name.items() if n in canonical}


def rare_classes(names: tuple[str, ...]) -> list[int]:
    """Class ids of leading edge and infiltrating tumour among ``names`` (those present)."""
    canonical = [canonical_class_name(n) for n in names]
    return [canonical.index(n) for n in RARE_NAMES if n in canonical]


def check_config(config: Config) -> None:
    """Refuse unknown option values before any data is read.

    Raises
    ------
    ValueError
        An option outside its choices, an unknown loss, or a non-positive size.
    """
    choices = {"tissue_mask": TISSUE_MASK_MODES, "stain_fit": STAIN_FIT_MODES,
               "class_weighting": ("median", "inverse", "inverse_sqrt", "none"),
               "optimizer": ("adam", "adamw", "sgd", "rmsprop"), "classes": tuple(CLASS_SETS)}
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, not "
                             f"{getattr(config, key)!r}")
    make_loss(config.loss)
    if config.downscale < 1 or (config.crop_size is not None and config.crop_size < 1):
        raise ValueError(f"downscale ({config.downscale}) and crop_size ({config.crop_size}) "
                         "must be positive")
