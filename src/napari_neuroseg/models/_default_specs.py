"""The declared models: one :class:`ModelSpec` per training recipe.

Descriptions say what a model computes, never where its weights come from: that depends on
the checkpoint found (bundled, registered or none) and is said by
:func:`napari_neuroseg.models.bundled.weights_provenance`.

Sources for the values, by recipe (docs/training-recipes.md says where each comes
from; its write-up is in ``shared/seeds``, and a spec's ``extra["seed"]`` keeps its
number):

* the LGG tissue recipe (transfer from the GBM model, 000): 4 LGG classes and their ids, Macenko
  stain normalisation, HSV tissue mask (saturation > 15, value < 240, 5x5 closing/opening), an
  8-class GBM model with a 1x1 conv 8 -> 16 -> 4 mapping head. The write-up does not name the 8 GBM
  classes; they are the IvyGAP anatomic-structure regions that GBM_WSSM segments: background plus
  seven regions (IvyGAP's "hyperplastic blood vessels" is not a class of its own here). The network
  is GBM_WSSM's FC-DenseNet103 (shared/docs/gbm-wssm-facts.md). The write-up gives no working
  resolution; the GBM_WSSM images are whole IvyGAP sections resized to 1024x1024, estimated at
  about 5 µm/px (docs/models.md says how), so the declared specs work at 5 µm/px; a checkpoint
  records the resolution it was trained at.
* the FLAIR MRI recipe (U-Net / TransUNet, 001): Kaggle LGG slices, 3 channels pre-contrast / FLAIR
  / post-contrast, 256x256, one FLAIR-abnormality mask; U-Net model 1 = 5 floors, 32 base features,
  two convs per floor (7.77M parameters); TransUNet = 4-floor CNN + transformer bottleneck.
* the CT metastasis recipe (002): brain extraction (-50..100 HU), brain window 40/80 HU, 256x256
  slices, ResNet-50 with a 1-channel stem and a 2048 -> 512 -> 1 head, one logit per slice, patient
  = max over slices, operating threshold 0.10.
* the LeNet nuclei-tile recipe (003): LeNet-5 on 256x256 RGB tiles, classes NO_NUCLEUS / NUCLEI,
  masks from sliding windows with stride 128 and probability aggregation. No resolution given:
  native.
* the CycleGAN + HoVer-Net recipe (IHC -> H&E, 004; title only): CycleGAN IHC -> H&E feeding
  HoVer-Net. 0.5 µm/px (20x, the resolution of the usual HoVer-Net training sets) is used for both
  so translated tiles feed HoVer-Net without resampling.
"""

from __future__ import annotations

from typing import Any

from napari_neuroseg.dataset.convert_ivygap import GBM_REGION_CLASSES, IVYGAP_MPP
from napari_neuroseg.dataset.tasks import (
    CT_CLASSES,
    LGG_TISSUE_CLASSES,
    MRI_CLASSES,
    NUCLEI_CLASSES,
    TILE_CLASSES,
    class_names,
)
from napari_neuroseg.models.spec import InputSpec, ModelSpec

__all__ = ["LEGACY_NO_WEIGHTS", "PREFERRED_MODELS", "default_specs"]

PREFERRED_MODELS: tuple[str, ...] = ("mri-flair-transunet",)
"""Declared models a model picker chooses first, in this order, when they ship trained weights
and are offered (else it takes the first trained model in menu order). ``mri-flair-transunet``
cross-validated best of the FLAIR models: mean volume Dice 0.658 with its clean-up, against
0.602 for ``mri-flair-unet`` (docs/models.md)."""

LEGACY_NO_WEIGHTS = (
    " No trained weights are bundled: train them (issue 4) or convert a checkpoint; until then "
    "the network has random weights."
)
"""The sentence older declared specs ended with; checkpoints written from them still carry it
in their sidecar's description, and the registry removes it (a checkpoint has weights).
Kept word for word, old ticket number included, because it is matched in stored files."""

GBM_CLASSES = GBM_REGION_CLASSES  # the IvyGAP regions, as the converter writes them
REGION_COLORS = {
    "background": "#000000",
    "leading edge": "#17becf",
    "infiltrating tumour": "#9467bd",
    "cellular tumour": "#2ca02c",
    "perinecrotic zone": "#ff7f0e",
    "pseudopalisading cells around necrosis": "#d62728",
    "microvascular proliferation": "#e377c2",
    "necrosis": "#8c564b",
}
LGG_CLASSES = class_names(LGG_TISSUE_CLASSES)
RGB = ("R", "G", "B")
MRI_CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")
TO_UNIT = {"kind": "range", "scale": 255.0}




def _he_tissue_input(preprocessing: tuple[str, ...] = ("macenko", "tissue_mask")) -> InputSpec:
    return InputSpec(
        channels=RGB,
        normalization=dict(TO_UNIT),
        patch_size=(256, 256),
        halo=32,
        resolution=IVYGAP_MPP,
        resolution_unit="um",
        preprocessing=preprocessing,
    )


def _mri_input() -> InputSpec:
    return InputSpec(
        channels=MRI_CHANNELS,
        normalization={"kind": "zscore"},
        patch_size=(256, 256),
        halo=0,
        resolution=None,
        resolution_unit="mm",
    )


def _tissue_specs() -> list[ModelSpec]:
    tissue_kwargs: dict[str, Any] = {
        "in_channels": 3, "n_source_classes": 8, "first_filters": 48, "growth_rate": 16,
        "down_blocks": [4, 5, 7, 10, 12], "bottleneck_layers": 15}
    common: dict[str, Any] = {"task": "semantic_segmentation", "architecture": "tissue",
                              "output": "probabilities"}
    return [
        ModelSpec(
            name="gbm-tissue-8",
            **common,
            arch_kwargs={**tissue_kwargs, "mapping_head": False},
            input=_he_tissue_input(("tissue_mask",)),
            classes=GBM_CLASSES,
            colors=tuple(REGION_COLORS[c] for c in GBM_CLASSES),
            description="8-class glioblastoma H&E region segmentation (IvyGAP anatomic "
            "structures) with the GBM_WSSM FC-DenseNet; the source model of lgg-tissue "
            "(the LGG tissue recipe).",
            extra={"seed": "000", "source": "IvyGAP anatomic structures (GBM_WSSM)"},
        ),
        ModelSpec(
            name="lgg-tissue",
            **common,
            arch_kwargs={**tissue_kwargs, "n_target_classes": 4, "mapping_head": True},
            input=_he_tissue_input(),
            classes=LGG_CLASSES,
            colors=tuple(REGION_COLORS[c] for c in LGG_CLASSES),
            description="Lower-grade glioma H&E regions (cellular tumour, leading edge, "
            "infiltrating tumour) by transfer from the 8-class GBM model through a 1x1 "
            "mapping head, Macenko-normalised (the LGG tissue recipe).",
            extra={
                "seed": "000",
                "source_model": "gbm-tissue-8",
                "source_classes": list(GBM_CLASSES),
                "tissue_mask_hsv": {"saturation_min": 15, "value_max": 240, "kernel": 5},
            },
        ),
    ]


def _mri_specs() -> list[ModelSpec]:
    common: dict[str, Any] = {
        "task": "semantic_segmentation",
        "classes": class_names(MRI_CLASSES),
        "colors": ("#000000", "#ffd700"),
        "output": "logit",
        "extra": {"seed": "001", "dataset": "Kaggle LGG MRI segmentation (Buda et al. 2019)"},
    }
    # the three sequences in, one FLAIR-abnormality logit out, 32 features at full resolution
    sequences_in_logit_out = {"in_channels": 3, "out_channels": 1, "base_features": 32}
    return [
        ModelSpec(
            name="mri-flair-unet",
            architecture="unet",
            arch_kwargs={**sequences_in_logit_out, "depth": 5, "convs_per_block": 2},
            input=_mri_input(),
            description="FLAIR-abnormality segmentation of brain MRI slices (pre-contrast, "
            "FLAIR, post-contrast) with the 5-floor U-Net of the FLAIR MRI recipe (model 1).",
            **common,
        ),
        ModelSpec(
            name="mri-flair-transunet",
            architecture="transunet",
            arch_kwargs={
                **sequences_in_logit_out,
                "depth": 4,
                "embed_dim": 256,
                "num_heads": 8,
                "num_layers": 4,
                "mlp_ratio": 4.0,
                "dropout": 0.1,
                "img_size": 256,
            },
            input=_mri_input(),
            description="FLAIR-abnormality segmentation of brain MRI slices with a TransUNet "
            "(CNN encoder, transformer bottleneck, CNN decoder; the FLAIR MRI recipe).",
            **common,
        ),
    ]


def _ct_spec() -> ModelSpec:
    return ModelSpec(
        name="ct-metastasis",
        task="slice_classification",
        architecture="resnet50_slice",
        arch_kwargs={"in_channels": 1, "hidden": 512, "dropout": 0.4},
        input=InputSpec(
            channels=("HU",),
            normalization={"kind": "ct_window", "center": 40.0, "width": 80.0},
            patch_size=(256, 256),
            halo=0,
            resolution=None,
            resolution_unit="mm",
            preprocessing=("brain_extraction", "ct_window"),
        ),
        classes=class_names(CT_CLASSES),
        colors=("#000000", "#ff00ff"),
        output="logit",
        threshold=0.10,
        description="Brain-metastasis probability per head-CT slice (ResNet-50, one logit); "
        "a patient is the maximum over its slices, positive above 0.10 (the CT metastasis recipe).",
        extra={
            "seed": "002",
            "patient_pooling": "max",
            "resize_to": [256, 256],
            "brain_extraction_hu": [-50.0, 100.0],
        },
    )


def _slide_specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="nuclei-lenet",
            task="tile_classification",
            architecture="lenet5",
            arch_kwargs={"in_channels": 3, "n_classes": 2, "input_size": 256, "dropout": 0.5},
            input=InputSpec(channels=RGB, normalization=dict(TO_UNIT), patch_size=(256, 256)),
            classes=class_names(TILE_CLASSES),
            colors=("#000000", "#00ff00"),
            output="probabilities",
            description="Nuclei present / absent per 256x256 H&E window (LeNet-5); windows "
            "every 128 px are aggregated into a nuclei mask (the LeNet nuclei-tile recipe).",
            extra={"seed": "003", "stride": 128},
        ),
        ModelSpec(
            name="nuclei-hovernet",
            task="instance_segmentation",
            architecture="hovernet",
            arch_kwargs={
                "in_channels": 3,
                "n_types": None,
                "base_features": 32,
                "encoder_depth": 4,
            },
            input=InputSpec(
                channels=RGB,
                normalization=dict(TO_UNIT),
                patch_size=(256, 256),
                halo=32,
                resolution=0.5,
                preprocessing=("tissue_mask",),
            ),
            classes=class_names(NUCLEI_CLASSES),
            colors=("#000000", "#ffff00"),
            output="instances",
            description="Nuclear instance segmentation of H&E (HoVer-Net style: nuclear "
            "pixels plus horizontal/vertical distance maps, watershed; the CycleGAN + HoVer-Net "
            "recipe).",
            extra={"seed": "004", "type_classes": []},
        ),
        ModelSpec(
            name="ihc-to-he",
            task="image_translation",
            architecture="cyclegan_generator",
            arch_kwargs={
                "in_channels": 3,
                "out_channels": 3,
                "base_features": 64,
                "n_blocks": 9,
                "norm": "instance",
            },
            input=InputSpec(
                channels=RGB,
                normalization={"kind": "range", "scale": 255.0, "out_range": [-1.0, 1.0]},
                patch_size=(256, 256),
                halo=32,
                resolution=0.5,
            ),
            classes=RGB,
            colors=("#ff0000", "#00ff00", "#0000ff"),
            output="image",
            description="Virtual H&E from IHC (CycleGAN ResNet generator; declared as the "
            "reference's 64 wide x 9 blocks, a checkpoint records its own width and depth); "
            "the output can feed nuclei-hovernet (the CycleGAN + HoVer-Net recipe).",
            extra={"seed": "004"},
        ),
    ]


def default_specs() -> list[ModelSpec]:
    """Fresh copies of the declared models, in menu order.

    Returns
    -------
    list of ModelSpec
        ``gbm-tissue-8``, ``lgg-tissue``, ``mri-flair-unet``, ``mri-flair-transunet``,
        ``ct-metastasis``, ``nuclei-lenet``, ``nuclei-hovernet``, ``ihc-to-he``.
    """
    return [*_tissue_specs(), *_mri_specs(), _ct_spec(), *_slide_specs()]
