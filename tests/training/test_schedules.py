"""Progressive unfreezing (the LGG tissue recipe), CT curriculum (the CT metastasis recipe),
gradient clipping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_neuroseg.models.resnet import ResNet50Slice
from napari_neuroseg.models.tissue import TissueSegmenter
from training.schedules import (
    LGG_TRANSFER_PHASES,
    Curriculum,
    Phase,
    ProgressiveUnfreezing,
    trainable_parameters,
)

#: A small FC-DenseNet with 53 layers before the mapping head, so that the LGG tissue recipe's
#: phases (head, last 10, 25, 50, all) unfreeze strictly more each time.
SMALL_TISSUE = {
    "first_filters": 8,
    "growth_rate": 4,
    "down_blocks": (2, 3, 4),
    "bottleneck_layers": 3,
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def resnet() -> ResNet50Slice:
    torch.manual_seed(0)
    return ResNet50Slice()


def test_unfreezing_phases_by_epoch_and_counts():
    model = TissueSegmenter(**SMALL_TISSUE)
    schedule = ProgressiveUnfreezing(model, [(0, 2), (10, 1), (25, 1), (50, 1), (None, 1)])
    assert [schedule.phase_at(e) for e in range(8)] == [0, 0, 1, 2, 3, 4, 4, 4]
    counts = schedule.trainable_counts()
    assert counts[0] == count_parameters(model.mapping)  # head only
    assert counts[0] < counts[1] < counts[2] < counts[3] < counts[4]
    assert counts[4] == count_parameters(model)
    seen = []
    for epoch in range(7):
        changed = schedule.apply(epoch)
        seen.append((changed, trainable_parameters(model)))
    assert [c for c, _ in seen] == [True, False, True, True, True, True, False]
    assert [n for _, n in seen] == [counts[i] for i in (0, 0, 1, 2, 3, 4, 4)]
    # The layers unfrozen in phase 1 are the last 10 before the head.
    schedule.apply(2)
    body = [(n, m) for n, m in model.trainable_layers() if not n.startswith("mapping")]
    trainable = [n for n, m in body if any(p.requires_grad for p in m.parameters())]
    assert trainable == [n for n, _ in body[-10:]]


def test_unfreezing_defaults_and_lr():
    assert [p.last_n for p in LGG_TRANSFER_PHASES] == [0, 10, 25, 50, None]
    model = TissueSegmenter(first_filters=4, growth_rate=2, down_blocks=(1, 1), bottleneck_layers=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = ProgressiveUnfreezing(model, [Phase(0, 1, lr=1e-3), Phase(None, 1, lr=1e-4)])
    schedule.apply(0, optimizer)
    assert optimizer.param_groups[0]["lr"] == 1e-3
    schedule.apply(1, optimizer)
    assert optimizer.param_groups[0]["lr"] == 1e-4
    with pytest.raises(ValueError):
        ProgressiveUnfreezing(model, [(0, 0)])


def _group_sizes(model: ResNet50Slice) -> dict[str, int]:
    return {name: count_parameters(m) for name, m in model.stage_modules().items()}


def test_curriculum_stages_lrs_and_trainable_counts(resnet):
    sizes = _group_sizes(resnet)
    curriculum = Curriculum(resnet)
    assert [curriculum.stage_at(e) for e in (0, 4, 5, 11, 12, 49)] == [0, 0, 1, 1, 2, 2]
    expected = {
        0: {"classifier": 5e-5},
        5: {"layer4": 1e-5, "classifier": 5e-5},
        12: {"layer3": 5e-6, "layer4": 1e-5, "classifier": 5e-5},
    }
    for epoch, lrs in expected.items():
        optimizer = curriculum.optimizer_for(epoch)
        assert {g["name"]: g["lr"] for g in optimizer.param_groups} == lrs
        assert curriculum.trainable_count() == sum(sizes[g] for g in lrs)
        in_optimizer = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        assert in_optimizer == curriculum.trainable_count()
    assert sizes["classifier"] == 2048 * 512 + 512 + 512 + 1  # seed: "1.05M parameters"


def test_curriculum_keeps_optimizer_within_stage_and_carries_state(resnet):
    curriculum = Curriculum(resnet)
    first = curriculum.optimizer_for(0)
    assert curriculum.optimizer_for(4) is first
    resnet.train()
    out = resnet(torch.randn(2, 1, 32, 32)).sum()
    out.backward()
    first.step()
    head = next(resnet.classifier.parameters())
    step_state = first.state[head]
    second = curriculum.optimizer_for(5)
    assert second is not first
    assert second.state[head] is step_state
    assert not any(p.requires_grad for p in resnet.layer3.parameters())
    assert all(p.requires_grad for p in resnet.layer4.parameters())
    resnet.zero_grad(set_to_none=True)


def test_curriculum_custom_stages_validated(resnet):
    with pytest.raises(ValueError, match="begin at 0"):
        Curriculum(resnet, stages=[(1, {"classifier": 1e-3})])
    custom = Curriculum(resnet, stages=[(0, {"classifier": 1e-3}), (2, {"layer1": 1e-4})])
    assert custom.lrs_at(3) == {"layer1": 1e-4}
    opt = custom.optimizer_for(3)
    assert [g["name"] for g in opt.param_groups] == ["layer1"]
