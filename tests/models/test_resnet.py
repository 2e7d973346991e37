"""Tests for napari_neuroseg.models.resnet (the CT metastasis recipe's ResNet-50 slice
classifier)."""

from __future__ import annotations

import pytest
import torch

from napari_neuroseg.models.resnet import (
    ResNet50Slice,
    curriculum_stage,
)

# Parameter counts, measured and cross-checked by hand:
#   torchvision resnet50 = 25,557,032; minus fc (2048*1000 + 1000 = 2,049,000) = 23,508,032;
#   a 1-channel conv1 has 64*1*49 = 3,136 weights instead of 9,408: backbone 23,501,760.
# head: 2048*512 + 512 + 512*1 + 1 = 1,049,601.  Total 24,551,361 (the CT metastasis recipe:
# "24.6M").
BACKBONE_1CH = 23_501_760
HEAD = 1_049_601
LAYER3 = 7_098_368
LAYER4 = 14_964_736


def _count(params) -> int:
    return sum(p.numel() for p in params)


def _trainable(model: torch.nn.Module) -> int:
    return _count(p for p in model.parameters() if p.requires_grad)


def _torchvision_resnet50_state_dict(
    in_channels: int = 3, num_batches_tracked: bool = True
) -> dict[str, torch.Tensor]:
    """Random tensors under torchvision's resnet50 key names and shapes (from its layout)."""
    gen = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}

    def bn(prefix: str, n: int) -> None:
        sd[f"{prefix}.weight"] = torch.rand(n, generator=gen) + 0.5
        sd[f"{prefix}.bias"] = torch.randn(n, generator=gen) * 0.1
        sd[f"{prefix}.running_mean"] = torch.randn(n, generator=gen) * 0.1
        sd[f"{prefix}.running_var"] = torch.rand(n, generator=gen) + 0.5
        if num_batches_tracked:
            sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)

    def conv(key: str, out_c: int, in_c: int, k: int) -> None:
        sd[key] = torch.randn(out_c, in_c, k, k, generator=gen) * (2.0 / (in_c * k * k)) ** 0.5

    conv("conv1.weight", 64, in_channels, 7)
    bn("bn1", 64)
    in_c = 64
    for layer, (width, blocks) in enumerate(
        zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), start=1
    ):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            conv(f"{p}.conv1.weight", width, in_c, 1)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2.weight", width, width, 3)
            bn(f"{p}.bn2", width)
            conv(f"{p}.conv3.weight", 4 * width, width, 1)
            bn(f"{p}.bn3", 4 * width)
            if b == 0:
                conv(f"{p}.downsample.0.weight", 4 * width, in_c, 1)
                bn(f"{p}.downsample.1", 4 * width)
            in_c = 4 * width
    sd["fc.weight"] = torch.randn(1000, 2048, generator=gen) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


@pytest.fixture(scope="module")
def tv_state_dict() -> dict[str, torch.Tensor]:
    return _torchvision_resnet50_state_dict()


@pytest.fixture
def model() -> ResNet50Slice:
    torch.manual_seed(0)
    return ResNet50Slice()


def test_torchvision_helper_matches_torchvision_key_count(tv_state_dict):
    # torchvision.models.resnet50().state_dict() has 320 entries and 25,557,032 parameters.
    assert len(tv_state_dict) == 320
    params = [v for k, v in tv_state_dict.items() if not k.endswith(("running_mean",
              "running_var", "num_batches_tracked"))]  # fmt: skip
    assert _count(params) == 25_557_032


def test_parameter_counts(model):
    groups = {k: _count(m.parameters()) for k, m in model.stage_modules().items()}
    assert _count(model.parameters()) == BACKBONE_1CH + HEAD == 24_551_361
    assert round(_count(model.parameters()) / 1e6, 1) == 24.6
    assert groups["classifier"] == HEAD and round(HEAD / 1e6, 2) == 1.05
    assert groups["layer3"] == LAYER3 and groups["layer4"] == LAYER4
    assert sum(groups.values()) == _count(model.parameters())  # every parameter in one group


def test_torchvision_module_names(model):
    keys = set(model.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.bias", "layer3.5.conv3.weight", "layer4.2.bn3.weight",
                "classifier.0.weight", "classifier.3.bias"):  # fmt: skip
        assert key in keys
    assert tuple(model.conv1.weight.shape) == (64, 1, 7, 7)
    assert tuple(model.classifier[0].weight.shape) == (512, 2048)
    assert isinstance(model.classifier[2], torch.nn.Dropout) and model.classifier[2].p == 0.4


def test_forward_shapes(model):
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
        feats = model.features(torch.randn(1, 1, 256, 256))
    assert out.shape == (2, 1) and out.dtype == torch.float32
    assert feats.shape == (1, 2048, 8, 8)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.randn(1, 3, 64, 64))


def test_load_torchvision_state_dict_report(model, tv_state_dict):
    head_before = model.classifier[0].weight.clone()
    report = model.load_torchvision_state_dict(tv_state_dict)
    assert report.conv1_reduced == "sum"
    assert report.ignored == ("fc.bias", "fc.weight")
    assert report.missing == () and report.unexpected == ()
    assert len(report.loaded) == 318 and "layer4.2.bn3.running_var" in report.loaded
    expected_stem = tv_state_dict["conv1.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.conv1.weight.detach(), expected_stem)
    torch.testing.assert_close(
        model.layer3[4].conv2.weight.detach(), tv_state_dict["layer3.4.conv2.weight"]
    )
    torch.testing.assert_close(model.classifier[0].weight, head_before)  # head not touched


def test_sum_reduced_stem_matches_rgb_model_on_grey_input(tv_state_dict):
    torch.manual_seed(1)
    grey, rgb = ResNet50Slice(in_channels=1).eval(), ResNet50Slice(in_channels=3).eval()
    grey.load_torchvision_state_dict(tv_state_dict)
    rgb.load_torchvision_state_dict(tv_state_dict)
    x = torch.randn(1, 1, 64, 64)

    def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
        # random weights make activations grow through 16 blocks: compare to the peak value
        return float((a - b).abs().max() / b.abs().max())

    with torch.no_grad():
        expected = rgb.features(x.repeat(1, 3, 1, 1))
        assert relative_error(grey.features(x), expected) < 1e-5
        grey.load_torchvision_state_dict(tv_state_dict, conv1_reduction="mean")
        assert relative_error(grey.features(x), expected) > 0.1


def test_load_strips_module_prefix_and_accepts_old_state_dicts(model):
    sd = _torchvision_resnet50_state_dict(num_batches_tracked=False)
    report = model.load_torchvision_state_dict({f"module.{k}": v for k, v in sd.items()})
    assert report.missing == () and len(report.loaded) == 265


def test_load_single_channel_state_dict_without_reduction(model):
    sd = _torchvision_resnet50_state_dict(in_channels=1)
    report = model.load_torchvision_state_dict(sd)
    assert report.conv1_reduced is None
    torch.testing.assert_close(model.conv1.weight.detach(), sd["conv1.weight"])


def test_load_shape_mismatch_names_the_key(model, tv_state_dict):
    bad = dict(tv_state_dict)
    bad["layer2.0.conv2.weight"] = torch.zeros(128, 128, 5, 5)
    with pytest.raises(ValueError, match=r"layer2\.0\.conv2\.weight.*\(128, 128, 5, 5\)"):
        model.load_torchvision_state_dict(bad)


def test_load_missing_and_unexpected_keys(model, tv_state_dict):
    partial = {k: v for k, v in tv_state_dict.items() if not k.startswith("layer4.")}
    partial["extra.weight"] = torch.zeros(3)
    with pytest.raises(KeyError, match="missing"):
        model.load_torchvision_state_dict(partial)
    before = model.layer4[0].conv1.weight.clone()
    report = model.load_torchvision_state_dict(partial, strict_backbone=False)
    assert report.unexpected == ("extra.weight",)
    assert "layer4.0.conv1.weight" in report.missing
    assert not any(k.endswith("num_batches_tracked") for k in report.missing)
    torch.testing.assert_close(model.layer4[0].conv1.weight, before)


def test_curriculum_stages_freeze_groups(model):
    assert curriculum_stage(1) == {"classifier": 5e-5}
    assert model.set_stage(1) == {"classifier": 5e-5}
    assert _trainable(model) == HEAD
    model.set_stage(2)
    assert _trainable(model) == HEAD + LAYER4 == 16_014_337
    rates = model.set_stage(3)
    assert rates == {"layer3": 5e-6, "layer4": 1e-5, "classifier": 5e-5}
    assert _trainable(model) == HEAD + LAYER4 + LAYER3 == 23_112_705
    groups = model.param_groups(stage=3)
    assert [(g["name"], g["lr"]) for g in groups] == list(rates.items())
    assert sum(_count(g["params"]) for g in groups) == _trainable(model)
    with pytest.raises(ValueError, match="stage"):
        model.set_stage(4)
    with pytest.raises(ValueError, match="unknown"):
        model.param_groups(lrs={"layer5": 1e-3})


def test_frozen_batchnorm_keeps_running_statistics(model):
    model.set_stage(2)
    model.train()
    assert not model.layer3[0].bn1.training and model.layer4[0].bn1.training
    frozen_before = model.layer3[0].bn1.running_mean.clone()
    trained_before = model.layer4[0].bn1.running_mean.clone()
    model(torch.randn(2, 1, 64, 64))
    torch.testing.assert_close(model.layer3[0].bn1.running_mean, frozen_before)
    assert not torch.allclose(model.layer4[0].bn1.running_mean, trained_before)
