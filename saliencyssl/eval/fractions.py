"""Label fractions: which images count as labelled, per seed, and the sweep over fractions x seeds.

Every downstream protocol answers "how good is the backbone when only a fraction of the
training labels is available?". This module owns that question's bookkeeping:

- :func:`parse_fractions` reads ``"0.1,0.2,1.0"`` from the command line, keeping each fraction's
  text exactly as written (it becomes the key in ``results.json``);
- :func:`balanced_subset` draws the labelled subset for one fraction and one seed, class by class;
- :func:`sweep` runs a scoring function on every (fraction, seed) pair and reports mean and
  standard deviation over seeds.

Subsets are **class-balanced** (stratified): each class contributes ``round(fraction * n_c)``
of its ``n_c`` images, and at least one, so on a set with equal class sizes every class gets the
same count, and no class ever disappears at small fractions. For one seed the subsets are
**nested** (the 10 % subset is inside the 20 % subset): each class is shuffled once per seed and
the first images of that order are taken, which keeps accuracy-against-fraction curves from
zig-zagging because of the draw alone. At fraction 1.0 every seed draws the whole set, so the
spread over seeds there is zero for deterministic protocols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

#: The default fractions of the command-line tools (their text is what results are keyed by).
DEFAULT_FRACTIONS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"


def parse_fractions(text: str) -> list[tuple[str, float]]:
    """Parse a comma-separated list of label fractions.

    Args:
        text: for example ``"0.1,0.5,1.0"`` (spaces allowed around commas).

    Returns:
        ``[(as_written, value), ...]`` in the order given, e.g. ``[("0.1", 0.1), ("1.0", 1.0)]``.

    Raises:
        ValueError: an entry is not a number, lies outside (0, 1], or appears twice; the message
            names the entry and the fix.
    """
    items = [part.strip() for part in str(text).split(",")]
    if not items or any(not part for part in items):
        raise ValueError(f"fractions {text!r}: give comma-separated numbers in (0, 1], e.g. 0.1,0.5,1.0")
    out: list[tuple[str, float]] = []
    seen: dict[float, str] = {}
    for part in items:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"fractions: {part!r} is not a number; give comma-separated numbers in (0, 1], "
                             f"e.g. 0.1,0.5,1.0") from None
        if not math.isfinite(value) or not 0.0 < value <= 1.0:
            raise ValueError(f"fractions: {part!r} lies outside (0, 1]; a label fraction is the share of training "
                             f"labels used, e.g. 0.1 for 10 %, 1.0 for all")
        if value in seen:
            raise ValueError(f"fractions: {part!r} repeats {seen[value]!r}; give each fraction once")
        seen[value] = part
        out.append((part, value))
    return out


def per_class_counts(labels: np.ndarray, fraction: float, min_per_class: int = 1) -> dict[int, int]:
    """How many images of each class a fraction takes: ``max(min_per_class, round(fraction * n_c))``,
    capped at ``n_c`` (rounding half up)."""
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    return {int(c): int(min(n, max(min_per_class, math.floor(fraction * n + 0.5)))) for c, n in zip(classes, sizes)}


def balanced_subset(labels: np.ndarray, fraction: float, seed: int, min_per_class: int = 1) -> np.ndarray:
    """Indices of a class-balanced labelled subset (see the module docstring).

    Args:
        labels: ``(N,)`` integer class labels, all ``>= 0``.
        fraction: in (0, 1].
        seed: subsets of one seed are nested across fractions; other seeds shuffle differently.
        min_per_class: every class keeps at least this many images (capped at its size).

    Returns:
        ``(M,)`` int64 indices into ``labels``, sorted ascending.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or negative (unlabelled) labels.
    """
    labels = np.asarray(labels)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"label fraction {fraction} lies outside (0, 1]")
    if labels.size and labels.min() < 0:
        raise ValueError("balanced_subset needs labels >= 0; the set holds unlabelled images (label -1)")
    counts = per_class_counts(labels, float(fraction), min_per_class)
    rng = np.random.default_rng([int(seed), 0x5EED])
    chosen = []
    for cls in sorted(counts):  # a fixed class order keeps the draw independent of dict ordering
        members = np.flatnonzero(labels == cls)
        order = rng.permutation(members)
        chosen.append(order[:counts[cls]])
    if not chosen:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclass
class FractionScore:
    """Scores of one label fraction over seeds.

    Attributes:
        fraction: the fraction's text as written (the results key).
        value: the fraction as a number.
        n_labelled: size of the labelled subset (the same for every seed).
        per_seed: ``{seed: {metric: value}}``.
    """

    fraction: str
    value: float
    n_labelled: int
    per_seed: dict[int, dict[str, float]] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        return float(np.mean([scores[metric] for scores in self.per_seed.values()]))

    def std(self, metric: str) -> float:
        """Population standard deviation over seeds (0 for one seed)."""
        return float(np.std([scores[metric] for scores in self.per_seed.values()]))

    def values(self, metric: str) -> list[float]:
        return [float(self.per_seed[s][metric]) for s in sorted(self.per_seed)]


def sweep(labels: np.ndarray, fractions: Sequence[tuple[str, float]], seeds: Sequence[int],
          score: Callable[[np.ndarray, int], dict[str, float]], min_per_class: int = 1,
          progress: str | None = None) -> list[FractionScore]:
    """Score every (fraction, seed) pair on its class-balanced labelled subset.

    Args:
        labels: ``(N,)`` labels of the training set (all one value for tasks without classes).
        fractions: as returned by :func:`parse_fractions`.
        seeds: for example ``range(3)``.
        score: ``score(indices, seed) -> {metric: value}``; ``indices`` are the labelled subset.
        min_per_class: see :func:`balanced_subset`.
        progress: a tqdm description, or ``None`` for no progress bar.

    Returns:
        One :class:`FractionScore` per fraction, in the given order.
    """
    pairs = [(text, value, seed) for text, value in fractions for seed in seeds]
    iterator = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc=progress, unit="run")
    results: dict[str, FractionScore] = {}
    for text, value, seed in iterator:
        indices = balanced_subset(labels, value, seed, min_per_class)
        entry = results.setdefault(text, FractionScore(text, value, int(len(indices))))
        entry.per_seed[int(seed)] = {k: float(v) for k, v in score(indices, int(seed)).items()}
    return [results[text] for text, _ in fractions]


__all__ = ["DEFAULT_FRACTIONS", "parse_fractions", "per_class_counts", "balanced_subset", "FractionScore", "sweep"]
