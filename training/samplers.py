"""Rare-class oversampling as an index sampler (the LGG tissue recipe, docs/training-recipes.md),
usable under DDP.

The LGG tissue recipe puts each training image in the bucket of the rarest class it contains and
repeats the buckets (infiltrating tumour 20x, leading edge 5x; the LE-focused variant 3x). Here
that becomes :class:`RareClassSampler`, a :class:`torch.utils.data.Sampler` that yields indices
(images are never copied): every epoch a sample appears ``rate`` times, a fractional rate being
rounded stochastically (``floor(rate)`` times plus one more with probability ``rate -
floor(rate)``), so its expected count is exactly ``rate``. The epoch's list is shuffled with a
generator seeded by ``(seed, epoch)``, identically on every rank, and each rank takes its stride of
it (padded so that every rank gets the same length).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import torch
from torch.utils.data import Sampler

# LGG classes of the LGG tissue recipe: 0 background, 1 cellular tumour, 2 leading edge, 3
# infiltrating tumour.
LGG_LE, LGG_IT = 2, 3
LGG_EXTREME_RATES = MappingProxyType({LGG_IT: 20.0, LGG_LE: 5.0})
LGG_LE_FOCUSED_RATES = MappingProxyType({LGG_LE: 3.0})

Presence = Sequence[Iterable[int]] | np.ndarray


def class_presence(presence: Presence) -> list[frozenset[int]]:
    """Normalise per-sample class presence to a list of sets of class ids.

    Parameters
    ----------
    presence : sequence of iterables of int, or array of shape (n_samples, n_classes)
        Either the class ids each sample contains, or per-sample pixel counts (a class is
        present where its count is > 0).

    Returns
    -------
    list of frozenset of int
    """
    if isinstance(presence, np.ndarray | torch.Tensor):
        counts = np.asarray(presence)
        if counts.ndim != 2:
            raise ValueError(f"pixel counts must be (n_samples, n_classes), got {counts.shape}")
        return [frozenset(np.flatnonzero(row > 0).tolist()) for row in counts]
    return [frozenset(int(c) for c in classes) for classes in presence]


def pixel_counts(masks: Iterable[np.ndarray], n_classes: int) -> np.ndarray:
    """Per-sample pixel count of every class, shape ``(n_samples, n_classes)``.

    Parameters
    ----------
    masks : iterable of integer arrays
        Label masks (any shape); values outside ``0 .. n_classes - 1`` raise.
    n_classes : int
    """
    rows = []
    for i, mask in enumerate(masks):
        flat = np.asarray(mask).reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= n_classes):
            raise ValueError(
                f"mask {i} has labels {sorted(set(np.unique(flat)) - set(range(n_classes)))} "
                f"outside 0..{n_classes - 1}"
            )
        rows.append(np.bincount(flat, minlength=n_classes))
    return np.stack(rows) if rows else np.zeros((0, n_classes), dtype=np.int64)


def rarest_class_rates(
    presence: Presence,
    rates: Mapping[int, float],
    priority: Sequence[int] | None = None,
    default_rate: float = 1.0,
) -> np.ndarray:
    """Oversampling rate of each sample: the rate of the rarest class it contains.

    Parameters
    ----------
    presence : sequence of iterables of int, or array (n_samples, n_classes)
        See :func:`class_presence`.
    rates : mapping of int to float
        ``{class_id: rate}``, e.g. ``{3: 20.0, 2: 5.0}`` (the LGG tissue recipe).
    priority : sequence of int, optional
        Classes from rarest to most common; the first one a sample contains gives its rate.
        Defaults to the classes of ``rates`` by decreasing rate.
    default_rate : float
        Rate of a sample without any class of ``priority``.

    Returns
    -------
    numpy.ndarray of float64, shape (n_samples,)
    """
    bad = {c: r for c, r in rates.items() if not np.isfinite(r) or r < 0}
    if bad or default_rate < 0:
        raise ValueError(f"oversampling rates must be finite and >= 0, got {bad or default_rate}")
    order = list(priority) if priority is not None else sorted(rates, key=lambda c: -rates[c])
    missing = [c for c in order if c not in rates]
    if missing:
        raise ValueError(f"priority classes {missing} have no rate in {dict(rates)}")
    sets = class_presence(presence)
    out = np.full(len(sets), float(default_rate))
    for i, classes in enumerate(sets):
        for cls in order:
            if cls in classes:
                out[i] = float(rates[cls])
                break
    return out


def effective_frequencies(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pixel share of each class when sample ``i`` is drawn ``weights[i]`` times.

    Parameters
    ----------
    counts : array (n_samples, n_classes)
        Per-sample pixel counts (:func:`pixel_counts`).
    weights : array (n_samples,)
        Expected (or actual) draws per sample in an epoch.

    Returns
    -------
    numpy.ndarray (n_classes,)
        Sums to 1 (all zeros when there are no pixels).
    """
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if counts.ndim != 2 or counts.shape[0] != weights.size:
        raise ValueError(f"counts {counts.shape} do not match {weights.size} sample weights")
    totals = weights @ counts
    whole = totals.sum()
    return totals / whole if whole > 0 else totals


def resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(world size, rank)``: the given values, else ``torch.distributed``'s, else ``(1, 0)``."""
    ready = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if ready else 1
    if rank is None:
        rank = torch.distributed.get_rank() if ready else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
    return num_replicas, rank


class RareClassSampler(Sampler[int]):
    """Yields each sample's index ``rate`` times per epoch, shuffled, split across ranks.

    Parameters
    ----------
    presence : sequence of iterables of int, or array (n_samples, n_classes)
        Classes each sample contains, or its pixel counts (:func:`class_presence`).
    rates : mapping of int to float
        ``{class_id: rate}``; the LGG tissue recipe: ``LGG_EXTREME_RATES`` (IT 20x, LE 5x) or
        ``LGG_LE_FOCUSED_RATES`` (LE 3x).
    priority : sequence of int, optional
        Classes from rarest to most common (default: by decreasing rate).
    default_rate : float
        Rate of samples with none of the rare classes.
    seed : int
        Same on every rank: all ranks shuffle identically and take disjoint strides.
    shuffle : bool
        Shuffle the epoch's list (otherwise index order, repeats adjacent).
    num_replicas, rank : int, optional
        DDP world size and rank; taken from ``torch.distributed`` when initialised.
    drop_last : bool
        Under DDP, drop the tail instead of padding it with the list's first indices.

    Notes
    -----
    Call :meth:`set_epoch` before each epoch (as for ``DistributedSampler``). The epoch
    length varies slightly between epochs when rates are fractional; ``len()`` gives the
    current epoch's.
    """

    def __init__(
        self,
        presence: Presence,
        rates: Mapping[int, float],
        priority: Sequence[int] | None = None,
        default_rate: float = 1.0,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.rates = rarest_class_rates(presence, rates, priority, default_rate)
        if self.rates.size == 0:
            raise ValueError("RareClassSampler needs at least one sample")
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.drop_last = drop_last
        self.epoch = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws and order to produce."""
        self.epoch = int(epoch)

    def epoch_counts(self) -> np.ndarray:
        """How many times each sample is drawn this epoch (all ranks together, no padding)."""
        rng = np.random.default_rng([self.seed, self.epoch, 0])
        whole = np.floor(self.rates)
        extra = rng.random(self.rates.size) < (self.rates - whole)
        return (whole + extra).astype(np.int64)

    def _global_indices(self) -> np.ndarray:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        counts = self.epoch_counts()
        indices = np.repeat(np.arange(counts.size), counts)
        if self.shuffle:
            indices = np.random.default_rng([self.seed, self.epoch, 1]).permutation(indices)
        if indices.size == 0:
            raise ValueError("every oversampling rate rounded to 0: the epoch is empty")
        self._cache = (self.epoch, indices)
        return indices

    def _rank_indices(self) -> np.ndarray:
        indices = self._global_indices()
        world = self.num_replicas
        if self.drop_last:
            indices = indices[: indices.size - indices.size % world]
        else:
            pad = (-indices.size) % world
            indices = np.concatenate([indices, np.resize(indices, pad)])
        return indices[self.rank :: world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices().tolist())

    def __len__(self) -> int:
        total = self._global_indices().size
        world = self.num_replicas
        return total // world if self.drop_last else -(-total // world)

    def expected_frequencies(self, counts: np.ndarray) -> np.ndarray:
        """Expected class pixel shares under the rates (:func:`effective_frequencies`)."""
        return effective_frequencies(counts, self.rates)

    def epoch_frequencies(self, counts: np.ndarray) -> np.ndarray:
        """Class pixel shares of this epoch's actual draws (all ranks, before padding)."""
        return effective_frequencies(counts, self.epoch_counts())
