"""The seed's GAN stabilisers (label smoothing, spectral normalisation) and the epoch length
and area-weighted H&E draws of the ``stain`` task, on tiny networks."""

import numpy as np
import pytest
import torch

from napari_neuroseg.dataset import Dataset, DatasetWriter
from napari_neuroseg.models.cyclegan import PatchDiscriminator, ResnetGenerator
from training.tasks._common import build_spec
from training.tasks.stain.data import UnpairedTiles
from training.tasks.stain.gan import CycleGAN, spectral_normalise
from training.tasks.stain.task import Config, _build


def _gan(**kwargs):
    torch.manual_seed(0)
    g = lambda: ResnetGenerator(3, 3, base_features=4, n_blocks=1)  # noqa: E731
    d = lambda: PatchDiscriminator(3, 4, 2)  # noqa: E731
    return CycleGAN(g(), g(), d(), d(), pool_size=0, **kwargs)


class _Constant(torch.nn.Module):
    """A 'discriminator' whose every logit is ``value``."""

    def __init__(self, value):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return self.value.expand(x.shape[0], 1, 2, 2)


def test_label_smoothing_sets_the_discriminators_real_target_only():
    gan = _gan(label_smoothing=0.1)
    gan.d_a, gan.d_b = _Constant(0.9), _Constant(0.9)
    x = torch.zeros(1, 3, 16, 16)
    terms = gan.losses(x, x)
    # lsgan: D's real term (0.9 - 0.9)^2 = 0, its fake term 0.9^2; G's target stays 1
    assert terms["d_a"].item() == pytest.approx(0.5 * 0.81)
    assert terms["g_adv_ab"].item() == pytest.approx(0.01)
    plain = _gan()
    plain.d_a, plain.d_b = _Constant(0.9), _Constant(0.9)
    assert plain.losses(x, x)["d_a"].item() == pytest.approx(0.5 * (0.01 + 0.81))
    with pytest.raises(ValueError, match="label_smoothing"):
        _gan(label_smoothing=0.5)


def test_spectral_norm_bounds_each_layer_and_keeps_the_gradients_apart():
    d = spectral_normalise(PatchDiscriminator(3, 4, 2))
    d.train()
    for _ in range(20):  # power iterations converge during training forwards
        d(torch.rand(1, 3, 32, 32))
    conv = d.model[0]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.05)
    gan = _gan()
    gan.d_a, gan.d_b = spectral_normalise(gan.d_a), spectral_normalise(gan.d_b)
    parts = gan.losses(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1)
    parts["loss_g"].backward(retain_graph=True)
    assert all(p.grad is None for p in gan.discriminator_parameters())
    gan.zero_grad(set_to_none=True)
    parts["loss_d"].backward()
    assert all(p.grad is None for p in gan.generator_parameters())
    assert all(p.grad is not None for p in gan.discriminator_parameters())


def test_config_builds_smoothed_spectrally_normalised_discriminators():
    config = Config(base_features=4, n_blocks=1, disc_features=4, disc_layers=2,
                    spectral_norm=True, label_smoothing=0.2)
    gan = _build(config, build_spec("ihc-to-he", {"base_features": 4, "n_blocks": 1}))
    assert gan.label_smoothing == 0.2
    assert any("parametrizations" in name for name, _ in gan.d_a.named_parameters())
    assert not any("parametrizations" in name for name, _ in gan.g_ab.named_parameters())
    assert Config().label_smoothing == 0.1 and Config().spectral_norm is False


def test_epoch_length_and_area_weighted_he_draws(tmp_path):
    with DatasetWriter(tmp_path / "d", "stain", "IHC", {0: "background"}) as writer:
        writer.add(np.zeros((16, 16, 3), np.uint8), domain="A", patient_id="a")
        writer.add(np.zeros((16, 16, 3), np.uint8), domain="B", patient_id="b1")
        writer.add(np.full((48, 48, 3), 255, np.uint8), domain="B", patient_id="b2")
    data = Dataset.open(tmp_path / "d")
    spec = build_spec("ihc-to-he")
    tiles = UnpairedTiles(data, np.array([0]), np.array([1, 2]), 16, spec, train=True,
                          length=200, by_area=True)
    assert len(tiles) == 200
    assert tiles.b_weights == pytest.approx([0.1, 0.9])
    torch.manual_seed(0)
    bright = np.mean([float(tiles[i][1].mean()) > 0 for i in range(200)])
    assert 0.8 < bright < 0.97  # the 9x larger tile is drawn about 90% of the time
    uniform = UnpairedTiles(data, np.array([0]), np.array([1, 2]), 16, spec, train=True)
    assert len(uniform) == 2 and uniform.b_weights is None


def test_identity_numbers_score_a_translator_on_tiles_already_in_its_target_stain(tmp_path):
    from training.tasks.stain.metrics import PSNR_CAP, translation_metrics

    with DatasetWriter(tmp_path / "d", "stain", "IHC", {0: "background"}) as writer:
        rng = np.random.default_rng(0)
        for domain in "AB":
            writer.add(rng.integers(0, 255, (16, 16, 3), np.uint8), domain=domain,
                       patient_id=domain)
    data = Dataset.open(tmp_path / "d")
    a = [item for item in data.items if item.domain == "A"]
    b = [item for item in data.items if item.domain == "B"]
    unchanged = lambda x: x / 255.0  # noqa: E731
    darker = lambda x: x / 510.0  # noqa: E731
    found = translation_metrics(data, a, b, unchanged, darker)
    assert (found["identity_psnr_b"], found["identity_ssim_b"]) == (PSNR_CAP, 1.0)
    assert found["identity_psnr_a"] < 20 and found["identity_ssim_a"] < 1
    assert "identity_psnr_a" not in translation_metrics(data, a, b, unchanged)


def test_the_cpu_recipe_config_builds_with_its_stabilisers():
    from pathlib import Path

    from training.config import build_config

    path = Path(__file__).resolve().parents[4] / "training" / "configs" / "ihc-to-he-cpu.yaml"
    config = build_config(Config, path, {})
    assert (config.base_features, config.n_blocks, config.crop_size) == (16, 6, 128)
    assert (config.epochs, config.tiles_per_epoch, config.lr_d) == (10, 1000, 4e-4)
    assert config.label_smoothing == 0.1 and config.spectral_norm is False
