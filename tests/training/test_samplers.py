"""Rare-class oversampling sampler (the LGG tissue recipe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.samplers import (
    LGG_EXTREME_RATES,
    LGG_LE_FOCUSED_RATES,
    RareClassSampler,
    class_presence,
    effective_frequencies,
    pixel_counts,
    rarest_class_rates,
)

# 0 background, 1 CT, 2 LE, 3 IT
PRESENCE = [{0, 1}, {0, 1, 2}, {0, 1, 2, 3}, {0, 3}, {1}]


def test_rate_is_that_of_the_rarest_class_present():
    rates = rarest_class_rates(PRESENCE, LGG_EXTREME_RATES)
    np.testing.assert_array_equal(rates, [1, 5, 20, 20, 1])
    le_focused = rarest_class_rates(PRESENCE, LGG_LE_FOCUSED_RATES)
    np.testing.assert_array_equal(le_focused, [1, 3, 3, 1, 1])
    # An explicit priority overrides the order by rate.
    flipped = rarest_class_rates(PRESENCE, {3: 20.0, 2: 5.0}, priority=[2, 3])
    np.testing.assert_array_equal(flipped, [1, 5, 5, 20, 1])


def test_presence_from_pixel_counts_and_masks():
    masks = [np.array([[0, 0], [1, 3]]), np.zeros((2, 2), int)]
    counts = pixel_counts(masks, 4)
    np.testing.assert_array_equal(counts, [[2, 1, 0, 1], [4, 0, 0, 0]])
    assert class_presence(counts) == [frozenset({0, 1, 3}), frozenset({0})]
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        pixel_counts([np.array([4])], 4)


def test_bad_rates_raise():
    with pytest.raises(ValueError, match="finite"):
        rarest_class_rates(PRESENCE, {3: -1.0})
    with pytest.raises(ValueError, match="no rate"):
        rarest_class_rates(PRESENCE, {3: 2.0}, priority=[3, 2])


def test_it_sample_drawn_twenty_times_as_often_as_common_one():
    presence = [{0, 1}] * 30 + [{0, 1, 2}] * 5 + [{0, 1, 2, 3}] * 2
    sampler = RareClassSampler(presence, LGG_EXTREME_RATES, seed=3)
    draws = np.zeros(len(presence))
    for epoch in range(20):
        sampler.set_epoch(epoch)
        draws += np.bincount(list(sampler), minlength=len(presence))
    common, le, it = draws[:30].mean(), draws[30:35].mean(), draws[35:].mean()
    assert it / common == pytest.approx(20.0)
    assert le / common == pytest.approx(5.0)
    assert len(sampler) == 30 + 5 * 5 + 2 * 20


def test_fractional_rates_by_stochastic_rounding():
    sampler = RareClassSampler([{0}, {2}], {2: 2.5}, seed=0)
    counts = []
    for epoch in range(2000):
        sampler.set_epoch(epoch)
        counts.append(sampler.epoch_counts())
    counts = np.array(counts)
    assert set(np.unique(counts[:, 1])) == {2, 3}
    assert counts[:, 1].mean() == pytest.approx(2.5, abs=0.05)  # 4.5 sigma
    assert np.all(counts[:, 0] == 1)


def test_epochs_reshuffle_and_seed_reproduces():
    a = RareClassSampler(PRESENCE * 5, LGG_EXTREME_RATES, seed=1)
    b = RareClassSampler(PRESENCE * 5, LGG_EXTREME_RATES, seed=1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    assert sorted(list(a)) == sorted(first)  # same multiset with integer rates


def test_ranks_split_the_same_permutation():
    presence = PRESENCE * 3  # 15 samples, 3 + 15 + 60 + 60 + 3 ... draws
    world = [RareClassSampler(presence, LGG_EXTREME_RATES, seed=7, num_replicas=3, rank=r)
             for r in range(3)]  # fmt: skip
    single = RareClassSampler(presence, LGG_EXTREME_RATES, seed=7)
    for epoch in (0, 4):
        for s in [*world, single]:
            s.set_epoch(epoch)
        parts = [list(s) for s in world]
        assert len({len(p) for p in parts}) == 1
        assert len(parts[0]) == len(world[0]) == -(-len(single) // 3)
        interleaved = [x for group in zip(*parts, strict=True) for x in group]
        assert interleaved[: len(single)] == list(single)
    dropped = RareClassSampler(presence, {3: 1.5}, seed=7, num_replicas=4, rank=0, drop_last=True)
    assert len(list(dropped)) == len(dropped)


def test_effective_frequencies_hand_case():
    counts = np.array([[90, 10, 0, 0], [50, 30, 0, 20]])
    np.testing.assert_allclose(effective_frequencies(counts, [1, 1]), [0.7, 0.2, 0, 0.1])
    # The IT image drawn 20x: totals 90+1000, 10+600, 0, 400 over 2100.
    sampler = RareClassSampler(counts, LGG_EXTREME_RATES)
    expected = np.array([1090, 610, 0, 400]) / 2100
    np.testing.assert_allclose(sampler.expected_frequencies(counts), expected)
    np.testing.assert_allclose(sampler.epoch_frequencies(counts), expected)


def test_in_a_dataloader_without_copying():
    data = TensorDataset(torch.arange(5))
    sampler = RareClassSampler(PRESENCE, LGG_EXTREME_RATES, seed=0)
    seen = torch.cat([batch[0] for batch in DataLoader(data, batch_size=8, sampler=sampler)])
    assert seen.numel() == len(sampler) == 1 + 5 + 20 + 20 + 1
    assert int((seen == 2).sum()) == 20
