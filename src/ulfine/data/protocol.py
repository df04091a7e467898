"""The long-tailed semi-supervised split protocol (ULFINE.md §1, ACR CVPR'23).

Class counts, k = 1..C (code: i = k - 1 = 0..C-1)::

    N_k = floor(N_1 * mu ** (k-1)),  mu = (1/gamma_l) ** (1/(C-1))   for k < C
    N_C = floor(N_1 / gamma_l)
    M_k likewise with M_1 and gamma_u, then arranged by the unlabeled distribution.

computed with Python floats exactly as ACR's ``make_imb_data`` does, so the lists match the
papers' (CIFAR-10, N_1=500, gamma=100: 500, 299, 179, 107, 64, 38, 23, 13, 8, 5).

Unlabeled distributions (`DISTRIBUTIONS`), each a function of (M_1, C, gamma_u):

- consistent: the M_k list in the labeled order (the papers set gamma_u = gamma_l);
- uniform: gamma_u = 1, every class gets M_1;
- reversed: the consistent list reversed (head of the labeled set = tail of the unlabeled);
- middle / headtail: SimPro (ICML'24) permutations of the consistent list. SimPro's
  ``make_imb_data`` (flag_LT 3 "centric", 4 "off-centric") gives class j the count at
  position order[j] of the consistent list, with, for C = 10,
  middle   order = [8, 6, 4, 2, 0, 1, 3, 5, 7, 9]  (largest counts in the middle classes),
  headtail order = [1, 3, 5, 7, 9, 8, 6, 4, 2, 0]  (largest at both ends, smallest in the middle).

Which images: per class, in dataset order (or a seeded per-class shuffle), labeled = the first
N_k; unlabeled = the next M_k (disjoint, default) or the first N_k + M_k (ACR's convention,
labeled ⊂ unlabeled). Natural long-tailed datasets (Small-ImageNet-127) instead label
round(labeled_fraction * n_k) images of each class and leave the rest unlabeled.
Natural (data.distribution=natural): the data as it is. Every image of train/<class>/ is labeled,
the separate unlabeled set (root/unlabeled/, STL-10's) is used whole, nothing is drawn by formula;
without a test set, `test_holdout_counts` images of each class become the test set.
A class with V_k validation images held out (data.val_per_class) keeps N_k - V_k labeled ones:
the last V_k of its labeled selection, so validation never touches test images (nor, in the
disjoint default, unlabeled ones). With data.val_source=unused, validation is instead the
val_per_class images of each class that follow its first N_k + M_k (images the split leaves
unused): balanced, as large as asked, and the labeled set stays whole; a benchmark protocol
(a tail class of CIFAR-10-LT with N_k = 5 would otherwise give 2 of its 5 labels to a 1-3 image
validation class).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ulfine.config import DataConfig
from ulfine.errors import UlfineError
from ulfine.registry import Registry

logger = logging.getLogger(__name__)

DistributionFn = Callable[[int, int, float], list[int]]
DISTRIBUTIONS: Registry[DistributionFn] = Registry("unlabeled distribution")


class SplitError(UlfineError, ValueError):
    """A split the data cannot satisfy (too few images, an empty class)."""


def long_tail_counts(max_count: int, num_classes: int, gamma: float) -> list[int]:
    """[N_1, ..., N_C] of ULFINE.md §1 (ACR's make_imb_data, Python floats, int())."""
    if num_classes == 1:
        return [max_count]
    mu = (1.0 / gamma) ** (1.0 / (num_classes - 1))
    counts = [int(max_count * mu**i) for i in range(num_classes - 1)]
    return counts + [int(max_count / gamma)]


def middle_order(num_classes: int) -> list[int]:
    """SimPro's centric order: even positions descending, then odd ascending."""
    return list(range(0, num_classes, 2))[::-1] + list(range(1, num_classes, 2))


def headtail_order(num_classes: int) -> list[int]:
    """SimPro's off-centric order: odd positions ascending, then even descending."""
    return list(range(1, num_classes, 2)) + list(range(0, num_classes, 2))[::-1]


@DISTRIBUTIONS.register("consistent")
def consistent(m1: int, num_classes: int, gamma_u: float) -> list[int]:
    return long_tail_counts(m1, num_classes, gamma_u)


@DISTRIBUTIONS.register("uniform")
def uniform(m1: int, num_classes: int, gamma_u: float) -> list[int]:
    """gamma_u is ignored: uniform means gamma_u = 1."""
    return long_tail_counts(m1, num_classes, 1.0)


@DISTRIBUTIONS.register("reversed")
def reversed_(m1: int, num_classes: int, gamma_u: float) -> list[int]:
    return long_tail_counts(m1, num_classes, gamma_u)[::-1]


@DISTRIBUTIONS.register("middle")
def middle(m1: int, num_classes: int, gamma_u: float) -> list[int]:
    counts = long_tail_counts(m1, num_classes, gamma_u)
    return [counts[i] for i in middle_order(num_classes)]


@DISTRIBUTIONS.register("headtail")
def headtail(m1: int, num_classes: int, gamma_u: float) -> list[int]:
    counts = long_tail_counts(m1, num_classes, gamma_u)
    return [counts[i] for i in headtail_order(num_classes)]


NATURAL = "natural"  # data.distribution: the data as it is, no synthetic long tail


def split_counts(cfg: DataConfig, num_classes: int) -> tuple[list[int], list[int]]:
    """(labeled N_k, unlabeled M_k) of the synthetic protocol for ``num_classes`` classes."""
    if cfg.distribution == "consistent" and cfg.gamma_u != cfg.gamma_l:
        logger.warning(
            "data.distribution=consistent with gamma_u=%s != gamma_l=%s: same class order, "
            "different ratios", cfg.gamma_u, cfg.gamma_l,
        )
    labeled = long_tail_counts(cfg.n1, num_classes, cfg.gamma_l)
    unlabeled = DISTRIBUTIONS.get(cfg.distribution)(cfg.m1, num_classes, cfg.gamma_u)
    return labeled, unlabeled


def natural_split_counts(class_sizes: list[int], labeled_fraction: float) -> tuple[list[int], list[int]]:
    """Natural long tail (Small-ImageNet-127, as SimPro/CoSSL): N_k = round(f n_k), M_k = n_k - N_k."""
    labeled = [int(np.around(n * labeled_fraction)) for n in class_sizes]
    return labeled, [n - l for n, l in zip(class_sizes, labeled)]


def test_holdout_counts(class_sizes: list[int], fraction: float) -> list[int]:
    """Test images held out of each class when a natural dataset has no test set:
    round(fraction * n_k), at least 1, and never the class's last image (a class of 1 keeps it)."""
    return [min(max(1, round(fraction * n)), n - 1) if n > 1 else 0 for n in class_sizes]


def val_counts_for(source: str, labeled_counts: list[int], val_per_class: int) -> list[int]:
    """V_k per class for ``data.val_source``: held out of the labeled images, or val_per_class
    of the unused ones each."""
    if source == "unused":
        return [val_per_class] * len(labeled_counts)
    return val_holdout_counts(labeled_counts, val_per_class)


def val_holdout_counts(labeled_counts: list[int], val_per_class: int) -> list[int]:
    """Validation images held out of each class's labeled selection.

    min(val_per_class, N_k // 2), so every class keeps at least half of its labeled images
    (a tail class with 5 labeled images gives 2 to validation, not all 5)."""
    return [min(val_per_class, n // 2) for n in labeled_counts]


@dataclass
class SplitIndices:
    """Indices into the training source; labeled and val come from each class's first N_k."""

    labeled: np.ndarray  # [sum N_k - sum V_k] int64 ([sum N_k] when val comes from unused images)
    unlabeled: np.ndarray  # [sum M_k] (or [sum N_k + M_k] when contained) int64
    val: np.ndarray  # [sum V_k] int64, empty when val_per_class = 0


def class_order(targets: np.ndarray, num_classes: int, shuffle_seed: int | None) -> list[np.ndarray]:
    """Per class, its indices in dataset order, or in a seeded shuffle of it."""
    per_class = [np.flatnonzero(targets == k) for k in range(num_classes)]
    if shuffle_seed is None:
        return per_class
    rng = np.random.default_rng(shuffle_seed)
    return [rng.permutation(idx) for idx in per_class]


def check_counts(
    class_names: list[str], available: list[int], needed: list[int], labeled: list[int],
    allow_empty: bool, unused_val: list[int] | None = None,
) -> None:
    """Raise naming the class when it has too few images or (unless allowed) no labeled ones.

    ``unused_val``: per class, the validation images taken from the unused ones (val_source=unused)."""
    unused_val = unused_val or [0] * len(class_names)
    for name, have, need, n_lab, v in zip(class_names, available, needed, labeled, unused_val):
        if need > have:
            raise SplitError(
                f"class '{name}' has {have} training images but the split needs {need} "
                f"({n_lab} labeled + {need - n_lab} unlabeled); lower data.n1/data.m1"
            )
        if need + v > have:
            raise SplitError(
                f"class '{name}' has {have - need} training images left after {n_lab} labeled + "
                f"{need - n_lab} unlabeled, but data.val_per_class={v} with data.val_source=unused "
                "needs that many; lower data.val_per_class or use data.val_source=labeled"
            )
        if n_lab == 0 and not allow_empty:
            raise SplitError(
                f"class '{name}' gets 0 labeled images (data.n1 / data.gamma_l too small); "
                "raise data.n1 or set data.allow_empty_classes=true"
            )


def select_indices(
    per_class: list[np.ndarray], labeled_counts: list[int], unlabeled_counts: list[int],
    val_counts: list[int], contained: bool, val_source: str = "labeled",
) -> SplitIndices:
    """Take the first N_k (val = the last V_k of those) and the next M_k (or first N_k + M_k);
    with ``val_source="unused"`` val is the V_k images after the first N_k + M_k instead."""
    labeled, unlabeled, val = [], [], []
    for idx, n, m, v in zip(per_class, labeled_counts, unlabeled_counts, val_counts):
        if val_source == "unused":
            labeled.append(idx[:n])
            val.append(idx[n + m : n + m + v])
        else:
            labeled.append(idx[: n - v])
            val.append(idx[n - v : n])
        unlabeled.append(idx[: n + m] if contained else idx[n : n + m])
    return SplitIndices(*(np.concatenate(parts).astype(np.int64) for parts in (labeled, unlabeled, val)))
