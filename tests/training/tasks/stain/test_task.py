"""``python -m training stain``: CycleGAN IHC -> H&E on tiny synthetic tiles."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_neuroseg.dataset import DatasetWriter
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.cyclegan import PatchDiscriminator, ResnetGenerator
from napari_neuroseg.models.runner import ModelRunner
from training.cli import main
from training.tasks._common import DataError
from training.tasks.stain.gan import CycleGAN, ImagePool, export_generator, linear_decay
from training.tasks.stain.metrics import ColorStats, psnr_ssim

SIZE = 32
IHC = ((200, 170, 130), (120, 70, 35))  # pale background, brown DAB
HE = ((235, 185, 215), (110, 50, 140))  # pink eosin, purple haematoxylin


def _tile(rng, colours, nuclei):
    background, nucleus = (np.asarray(c, np.float64) for c in colours)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    inside = np.zeros((SIZE, SIZE), bool)
    for y, x in nuclei:
        inside |= (yy - y) ** 2 + (xx - x) ** 2 < 16
    image = np.where(inside[..., None], nucleus, background) + rng.normal(0, 8, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _write(path, n_slides=4, per_slide=2, pairs=True, domains=("A", "B"), a_slides=None):
    """``per_slide`` A and B tiles per slide (A only on the first ``a_slides``); the first
    A tile of each slide is paired with its B tile (same nuclei)."""
    rng = np.random.default_rng(0)
    with DatasetWriter(path, "stain", "IHC", {0: "background"}) as writer:
        for s in range(n_slides):
            for k in range(per_slide):
                nuclei = rng.integers(4, SIZE - 4, (4, 2))
                here = domains if a_slides is None or s < a_slides else ("B",)
                ids = {d: f"s{s}_{d}{k}" for d in here}
                for d in here:
                    other = ids.get("B" if d == "A" else "A")
                    extra = {"pair": other} if pairs and k == 0 and d == "A" and other else {}
                    writer.add(_tile(rng, IHC if d == "A" else HE, nuclei), item_id=ids[d],
                               patient_id=f"P{s}", slide_id=f"slide{s}{d}", domain=d,
                               extra=extra, mpp=0.5)
    return path


TINY = ("base_features: 4\nn_blocks: 1\ndisc_features: 4\ncrop_size: 32\nbatch_size: 2\n"
        "grid_tiles: 1\n")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny 32-px networks only lose from intra-op threads (badly on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("stain") / "data")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One epoch, then ``--resume`` with two epochs (the second one decays the lr)."""
    root = tmp_path_factory.mktemp("run")
    (root / "tiny.yaml").write_text(TINY)
    args = ["stain", "--data", str(dataset), "--out", str(root / "run"), "--device", "cpu",
            "--config", str(root / "tiny.yaml"), "--seed", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    first = load_file(str(root / "run" / "checkpoints" / "last.safetensors"))
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    return root / "run", first


def test_training_writes_metrics_report_and_plots(trained):
    run, _ = trained
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("cycle_ssim_a", "cycle_ssim_b", "paired_ssim_ab", "paired_ssim_ba"):
        assert -1.0 <= metrics[key] <= 1.0, key
    for key in ("cycle_psnr_a", "cycle_psnr_b", "paired_psnr_ab"):
        assert 0.0 < metrics[key] < 100.0, key
    assert metrics["color_distance_ab"] > 0 and metrics["color_distance_untranslated"] > 10
    assert metrics["n_pairs"] == 1 and metrics["val_a_tiles"] == metrics["val_b_tiles"] == 2
    assert metrics["train_a_tiles"] == 6 and metrics["crop_size"] == SIZE
    assert metrics["best_epoch"] == 1  # monitor epoch/max: best = last, as the reference
    assert "paired_ssim_ab" in (run / "report.md").read_text()
    assert (run / "plots" / "history.png").is_file()
    assert (run / "plots" / "translation_grid.png").stat().st_size > 1000


def test_history_has_loss_terms_and_the_lr_decays_in_the_second_half(trained):
    history = json.loads((trained[0] / "history.json").read_text())
    assert history["epoch"] == [0, 1]
    assert history["lr"] == [[2e-4, 2e-4], [1e-4, 1e-4]]  # resumed with epochs 2: 1 + 1 decay
    for key in ("train_g_adv_ab", "train_cycle_a", "train_identity_b", "train_d_b"):
        assert len(history[key]) == 2 and all(v > 0 for v in history[key]), key


def test_best_checkpoint_is_the_generator_and_runs_in_the_plugin(trained):
    run, first = trained
    loaded = load_checkpoint(run / "checkpoints" / "best")
    assert isinstance(loaded.model, ResnetGenerator) and loaded.spec.name == "ihc-to-he"
    assert loaded.spec.arch_kwargs["base_features"] == 4 and loaded.spec.synthetic is False
    last = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert not any(k.startswith(("g_ab.", "d_a.")) for k in first)  # exported after epoch 0
    assert any(not torch.equal(first[k], last[k]) for k in last)  # and again after epoch 1
    runner = ModelRunner(loaded.model, loaded.spec, device="cpu")
    tile = _tile(np.random.default_rng(5), IHC, [(10, 10)])
    out = runner(tile.transpose(2, 0, 1)[None].astype(np.float32))
    assert out.shape == (1, 3, SIZE, SIZE) and 0.0 <= out.min() and out.max() <= 1.0
    state = load_file(str(run / "state" / "last_state.safetensors"))
    assert any("d_b." in k for k in state)  # the full CycleGAN stays for --resume


def test_evaluate_reports_paired_and_colour_numbers(trained, dataset, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(trained[0] / "checkpoints" / "best"), "--data",
                 str(dataset), "--device", "cpu", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "stain" and metrics["model"] == "ihc-to-he"
    assert metrics["n_a"] == metrics["n_b"] == 8 and metrics["n_pairs"] == 4
    assert 0.0 < metrics["paired_psnr_ab"] < 100.0 and -1 <= metrics["paired_ssim_ab"] <= 1
    assert metrics["color_distance_ab"] > 0
    assert "cycle_ssim_a" not in metrics  # only the A->B generator is in a checkpoint
    assert json.loads(capsys.readouterr().out)["n_pairs"] == 4


def _tiny_gan(pool_size=0):
    torch.manual_seed(0)
    nets = [ResnetGenerator(base_features=4, n_blocks=1) for _ in range(2)]
    nets += [PatchDiscriminator(base_features=4, n_layers=2) for _ in range(2)]
    return CycleGAN(*nets, pool_size=pool_size)


def _batch():
    gen = torch.Generator().manual_seed(1)
    return (torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1,
            torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1)


def test_generator_terms_give_no_gradient_to_the_discriminators_and_vice_versa():
    gan = _tiny_gan()
    parts = gan.losses(*_batch())
    g_params, d_params = gan.generator_parameters(), gan.discriminator_parameters()
    from_g = torch.autograd.grad(parts["loss_g"], g_params + d_params, allow_unused=True,
                                 retain_graph=True)
    from_d = torch.autograd.grad(parts["loss_d"], g_params + d_params, allow_unused=True)
    n = len(g_params)
    assert all(g is None for g in from_g[n:])  # D frozen inside the G terms
    assert all(g is None for g in from_d[:n])  # fakes detached inside the D terms
    assert all(g is not None and g.abs().sum() > 0 for g in from_g[:n])
    assert all(g is not None and g.abs().sum() > 0 for g in from_d[n:])


def _reference_step(gan, real_a, real_b):
    """The reference's step: G with the discriminators frozen, then D on detached fakes."""
    mse, l1 = torch.nn.functional.mse_loss, torch.nn.functional.l1_loss
    opt_g = torch.optim.Adam(gan.generator_parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(gan.discriminator_parameters(), 2e-4, betas=(0.5, 0.999))
    for p in gan.discriminator_parameters():
        p.requires_grad_(False)
    fake_b, fake_a = gan.g_ab(real_a), gan.g_ba(real_b)
    d_b, d_a = gan.d_b(fake_b), gan.d_a(fake_a)
    loss_g = (mse(d_b, torch.ones_like(d_b)) + mse(d_a, torch.ones_like(d_a))
              + 10 * l1(gan.g_ba(fake_b), real_a) + 10 * l1(gan.g_ab(fake_a), real_b)
              + 5 * l1(gan.g_ab(real_b), real_b) + 5 * l1(gan.g_ba(real_a), real_a))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    for p in gan.discriminator_parameters():
        p.requires_grad_(True)
    loss_d = 0
    for d, real, fake in ((gan.d_b, real_b, fake_b), (gan.d_a, real_a, fake_a)):
        on_real, on_fake = d(real), d(fake.detach())
        loss_d = loss_d + 0.5 * (mse(on_real, torch.ones_like(on_real))
                                 + mse(on_fake, torch.zeros_like(on_fake)))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    return loss_g, loss_d


def test_one_backward_one_adam_equals_the_reference_two_optimiser_step():
    ours, ref = _tiny_gan(), _tiny_gan()
    start = copy.deepcopy(ours.state_dict())
    real_a, real_b = _batch()
    opt = torch.optim.Adam([{"params": ours.generator_parameters()},
                            {"params": ours.discriminator_parameters()}], 2e-4,
                           betas=(0.5, 0.999))
    loss = ours(real_a, real_b)
    loss.backward()
    opt.step()
    loss_g, loss_d = _reference_step(ref, real_a, real_b)
    assert torch.allclose(loss, loss_g + loss_d)
    for (name, mine), theirs in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-7), name
        assert not torch.equal(mine, start[name]), name  # every network took a step


def test_image_pool_returns_stored_fakes_once_full():
    torch.manual_seed(0)
    pool = ImagePool(2)
    first = pool.query(torch.zeros(2, 1, 2, 2))
    assert torch.equal(first, torch.zeros(2, 1, 2, 2)) and len(pool.images) == 2
    later = torch.cat([pool.query(torch.ones(1, 1, 2, 2)) for _ in range(20)])
    assert (later == 0).all(dim=(1, 2, 3)).any() and (later == 1).all(dim=(1, 2, 3)).any()
    assert torch.equal(ImagePool(0).query(torch.ones(3, 1)), torch.ones(3, 1))


def test_linear_decay_keeps_the_lr_then_decays_it_but_never_to_zero():
    factor = linear_decay(200, 100)
    assert factor(0) == factor(99) == 1.0
    assert factor(100) == pytest.approx(1 - 1 / 101) and factor(199) == pytest.approx(1 / 101)
    with pytest.raises(ValueError, match="decay_epochs"):
        linear_decay(4, 5)


def test_export_generator_rewrites_a_whole_cyclegan_checkpoint_once(tmp_path):
    from napari_neuroseg.models.checkpoint import save_checkpoint
    from training.tasks._common import build_spec

    spec = build_spec("ihc-to-he", {"base_features": 4, "n_blocks": 1})
    gan = _tiny_gan()
    save_checkpoint(tmp_path / "best", gan, spec)
    with pytest.raises(ValueError, match="unexpected"):
        load_checkpoint(tmp_path / "best")
    assert export_generator(tmp_path / "best") is True
    loaded = load_checkpoint(tmp_path / "best")
    assert torch.equal(loaded.model.model[1].weight, gan.g_ab.model[1].weight)
    assert export_generator(tmp_path / "best") is False


def test_metrics_helpers_measure_what_they_say():
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3))
    assert psnr_ssim(image, image) == (100.0, 1.0)
    psnr, ssim = psnr_ssim(image, np.clip(image + 0.1, 0, 1))
    assert 15 < psnr < 25 and ssim < 1
    pink, brown = ColorStats(), ColorStats()
    pink.update(np.full((4, 4, 3), (0.9, 0.7, 0.85)))
    brown.update(np.full((4, 4, 3), (0.5, 0.3, 0.15)))
    assert pink.distance(pink) == 0 and pink.distance(brown) > 30
    assert np.allclose(pink.std, 0, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"domains": ("A",)}, "no items of domain 'B'"),
    ({"a_slides": 1}, "no tiles for val_a"),  # the only IHC slide goes to training
])
def test_bad_datasets_are_refused_before_training(tmp_path, kwargs, message):
    data = _write(tmp_path / "data", **kwargs)
    with pytest.raises(DataError, match=message):
        main(["stain", "--data", str(data), "--epochs", "1", "--device", "cpu"])


def test_a_pair_within_one_domain_and_an_impossible_monitor_are_refused(tmp_path):
    data = _write(tmp_path / "data", pairs=False)
    (tmp_path / "c.yaml").write_text(TINY + "monitor: paired_ssim_ab\n")
    with pytest.raises(DataError, match="monitor 'paired_ssim_ab'"):
        main(["stain", "--data", str(data), "--epochs", "1", "--device", "cpu", "--config",
              str(tmp_path / "c.yaml")])
    with DatasetWriter(tmp_path / "data", "stain", "IHC", {0: "background"}) as writer:
        writer.add(_tile(np.random.default_rng(1), IHC, []), item_id="odd", patient_id="P0",
                   domain="A", extra={"pair": "s0_A0"}, mpp=0.5)
    with pytest.raises(DataError, match="same domain"):
        main(["stain", "--data", str(data), "--epochs", "1", "--device", "cpu"])
