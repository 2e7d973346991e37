"""The training loop: determinism, resume after SIGKILL, NaN guard, callbacks, early stop."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from napari_neuroseg.models.checkpoint import load_checkpoint, read_sidecar
from napari_neuroseg.models.spec import InputSpec, ModelSpec
from training.loop import NonFiniteLossError, Trainer
from training.progress import ProgressBar, format_bar

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("tiny_run.py")


def _spec() -> ModelSpec:
    return ModelSpec(
        name="tiny", task="tile_classification", architecture="tiny", arch_kwargs={},
        input=InputSpec(channels=("x",), normalization={"kind": "zscore"}, patch_size=(4, 4)),
        classes=("a", "b"), colors=("#000000", "#ffffff"), output="probabilities",
    )


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))


def _loaders(n: int = 48) -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=16)


def _trainer(tmp_path: Path | None, epochs: int = 3, **kwargs) -> Trainer:
    train, val = _loaders()
    opts = {"device": "cpu", "seed": 3, "on_progress": lambda e: None}
    opts.update(kwargs)
    return Trainer(_model(), _spec(), train, val, nn.functional.cross_entropy,
                   lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                   epochs=epochs, run_dir=tmp_path, **opts)


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_two_seeded_runs_give_identical_history_and_weights(tmp_path):
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b")
    ha, hb = a.fit(), b.fit()
    assert ha["train_loss"] == hb["train_loss"] and ha["val_loss"] == hb["val_loss"]
    assert torch.equal(_weights(a.model), _weights(b.model))
    assert ha["train_loss"][-1] < ha["train_loss"][0]  # it learns
    c = _trainer(None, seed=4)
    assert c.fit()["train_loss"] != ha["train_loss"]  # the seed matters


def test_run_folder_checkpoints_are_loadable_and_history_written(tmp_path):
    trainer = _trainer(tmp_path, epochs=2)
    trainer.fit()
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epoch"] == [0, 1]
    sidecar = read_sidecar(tmp_path / "checkpoints" / "last")
    assert sidecar["metrics"]["epoch"] == 1
    state = load_file(str(tmp_path / "checkpoints" / "last.safetensors"))
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(state[key], value)
    best = read_sidecar(tmp_path / "checkpoints" / "best")
    assert best["metrics"]["val_loss"] == min(history["val_loss"])
    with pytest.raises(Exception, match="tiny"):  # the spec's architecture is not registered
        load_checkpoint(tmp_path / "checkpoints" / "best")


def test_resume_in_process_matches_an_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path / "full", epochs=4)
    full.fit()
    _trainer(tmp_path / "part", epochs=2).fit()
    resumed = _trainer(tmp_path / "part", epochs=4)
    history = resumed.fit(resume=True)
    assert history["epoch"] == [0, 1, 2, 3]
    assert torch.equal(_weights(full.model), _weights(resumed.model))
    assert history["train_loss"] == full.history["train_loss"]


def _run_script(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(run_dir), "3", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_mid_epoch_loses_at_most_that_epoch(tmp_path):
    reference = _run_script(tmp_path / "ref")
    killed = _run_script(tmp_path / "run", "--slow-from", "1")
    state = tmp_path / "run" / "state" / "last_state.json"
    deadline = time.monotonic() + 90
    while not state.exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.05)
    assert state.exists(), killed.communicate()[1].decode()
    time.sleep(0.3)  # inside epoch 1, whose steps are slow
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert json.loads(state.read_text())["state"]["epoch"] == 0
    resumed = _run_script(tmp_path / "run", "--resume")
    assert resumed.wait(120) == 0, resumed.communicate()[1].decode()
    assert reference.wait(120) == 0, reference.communicate()[1].decode()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["epoch"] == [0, 1, 2]
    ref = load_file(str(tmp_path / "ref" / "checkpoints" / "last.safetensors"))
    got = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    current = {}

    def poison(trainer, epoch):
        current["epoch"] = epoch

    def loss(out, target):
        value = nn.functional.cross_entropy(out, target)
        return value * float("nan") if current["epoch"] == 2 else value

    trainer = _trainer(tmp_path, epochs=4, callbacks=[poison])
    trainer.loss_fn = loss
    with pytest.raises(NonFiniteLossError, match=r"nan at epoch 2, step 0.*last good"):
        trainer.fit()
    sidecar = read_sidecar(tmp_path / "checkpoints" / "last")
    assert sidecar["metrics"]["epoch"] == 1
    weights = load_file(str(tmp_path / "checkpoints" / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [0, 1]


def test_callbacks_rebuild_optimizer_and_log_values(tmp_path):
    seen = []

    def freeze_first(trainer, epoch):
        first = trainer.model[0]
        first.requires_grad_(epoch >= 1)
        trainer.rebuild_optimizer()
        trainer.log("trainable", sum(p.numel() for p in trainer.model.parameters()
                                     if p.requires_grad))
        seen.append(epoch)

    trainer = _trainer(None, epochs=2, callbacks=[freeze_first])
    before = trainer.model[0].weight.detach().clone()
    trainer.optimizer_factory = lambda m: torch.optim.SGD(
        [p for p in m.parameters() if p.requires_grad], lr=0.1)
    history = trainer.fit()
    assert seen == [0, 1]
    assert history["trainable"] == [8 * 2 + 2, 4 * 8 + 8 + 8 * 2 + 2]
    assert not torch.equal(before, trainer.model[0].weight)  # trained in epoch 1 only


def test_early_stopping_and_reduce_lr_on_plateau(tmp_path):
    trainer = _trainer(
        None, epochs=10, monitor="val_loss", early_stopping_patience=2,
        scheduler_factory=lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
    )
    trainer.optimizer_factory = lambda m: torch.optim.SGD(m.parameters(), lr=0.0)
    history = trainer.fit()  # lr 0: the val loss never improves after epoch 0
    assert history["epoch"] == [0, 1, 2]
    assert trainer.best_epoch == 0


def test_monitor_must_exist_and_mode_is_checked():
    with pytest.raises(ValueError, match="mode"):
        _trainer(None, mode="best")
    with pytest.raises(KeyError, match="dice"):
        _trainer(None, epochs=1, monitor="dice").fit()


def test_evaluate_fn_metrics_enter_history_and_choose_best(tmp_path):
    scores = iter([0.2, 0.9, 0.5])
    trainer = _trainer(tmp_path, epochs=3, monitor="dice", mode="max",
                       evaluate_fn=lambda model, loader, device: {"dice": next(scores)})
    history = trainer.fit()
    assert history["dice"] == [0.2, 0.9, 0.5]
    assert read_sidecar(tmp_path / "checkpoints" / "best")["metrics"]["epoch"] == 1


def test_progress_bar_text():
    assert format_bar(5, 10, width=10) == "[#####-----] 5/10"
    assert format_bar(3, None) == "[step 3]"
    out = io.StringIO()
    bar = ProgressBar(out, interval=0.0)
    bar({"event": "step", "epoch": 0, "epochs": 2, "step": 1, "steps": 2, "loss": 0.5})
    bar({"event": "epoch_end", "epoch": 0, "epochs": 2, "train_loss": 0.5, "seconds": 1.0})
    text = out.getvalue()
    assert "epoch 1/2" in text and "loss 0.5000" in text and "train_loss 0.5" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_channels_last(tmp_path):
    trainer = _trainer(tmp_path, epochs=1, device="cuda")
    trainer.fit()
    assert trainer.amp_dtype in (torch.bfloat16, torch.float16)


def test_only_rank_zero_writes_the_run_folder(tmp_path):
    from training.ddp import DistInfo

    events = []
    trainer = _trainer(tmp_path / "rank1", epochs=1, dist=DistInfo(rank=1, world_size=1),
                       on_progress=events.append)
    trainer.fit()
    assert not (tmp_path / "rank1").exists() and events == []
    assert trainer.history["epoch"] == [0]


def test_evaluate_init_validates_the_start_and_every_sidecar_records_it(tmp_path):
    from napari_neuroseg.annotate.start_comparison import compare_with_start

    heard = []
    trainer = _trainer(tmp_path, epochs=2, evaluate_init=True, on_progress=heard.append)
    start = _model().eval()  # the same seeded weights the trainer starts from, no dropout
    _, val = _loaders()
    expected = sum(float(nn.functional.cross_entropy(start(x), y)) * len(y) for x, y in val) / 48
    trainer.fit()
    assert heard[0]["event"] == "baseline" and heard[0]["monitor"] == "val_loss"
    assert heard[0]["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.baseline == {"val_loss": pytest.approx(expected, rel=1e-5)}
    best = read_sidecar(tmp_path / "checkpoints" / "best")["metrics"]
    assert best["baseline"] == trainer.baseline and best["mode"] == "min"
    assert best["validation"]["val_loss"] == best["val_loss"] < expected  # it learnt
    comparison = compare_with_start(tmp_path / "checkpoints" / "best.safetensors")
    assert comparison.metric == "val_loss" and comparison.at_least_as_good
    assert comparison.start == pytest.approx(expected, rel=1e-5)
    plain = _trainer(tmp_path / "plain", epochs=1)
    plain.fit()
    assert plain.baseline is None
    assert not compare_with_start(tmp_path / "plain" / "checkpoints" / "best").at_least_as_good


def test_grad_clip_bounds_the_gradient_norm_of_every_step(tmp_path):
    """The loop clips the global norm itself (after unscaling) before each optimizer step."""

    def run(**kwargs) -> list[float]:
        norms: list[float] = []

        def sgd(model: nn.Module) -> torch.optim.Optimizer:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            step = optimizer.step

            def recording_step(*args, **kw):
                grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
                norms.append(float(torch.cat(grads).norm()))
                return step(*args, **kw)

            optimizer.step = recording_step
            return optimizer

        train, val = _loaders()
        Trainer(_model(), _spec(), train, val, nn.functional.cross_entropy, sgd, epochs=1,
                run_dir=None, device="cpu", seed=3, on_progress=lambda e: None, **kwargs).fit()
        return norms

    assert max(run()) > 0.05  # without clipping the norms are larger than the limit below
    clipped = run(grad_clip=0.05)
    assert clipped and max(clipped) <= 0.05 * (1 + 1e-4)
