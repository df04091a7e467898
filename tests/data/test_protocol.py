"""The LT count formula and the per-class image selection."""
from __future__ import annotations

import numpy as np
import pytest

from ulfine.config import DataConfig
from ulfine.data.protocol import (
    DISTRIBUTIONS,
    SplitError,
    check_counts,
    class_order,
    long_tail_counts,
    natural_split_counts,
    select_indices,
    split_counts,
    val_counts_for,
    val_holdout_counts,
)

M_CONSISTENT = [4000, 2397, 1437, 861, 516, 309, 185, 111, 66, 40]

# Hand-computed from ACR's formula and SimPro's orders (protocol.py docstring).
EXPECTED_UNLABELED = {
    "consistent": M_CONSISTENT,
    "uniform": [4000] * 10,
    "reversed": [40, 66, 111, 185, 309, 516, 861, 1437, 2397, 4000],
    "middle": [66, 185, 516, 1437, 4000, 2397, 861, 309, 111, 40],
    "headtail": [2397, 861, 309, 111, 40, 66, 185, 516, 1437, 4000],
}


def test_labeled_counts_match_the_papers() -> None:
    assert long_tail_counts(500, 10, 100) == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert long_tail_counts(1500, 10, 100) == [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
    assert long_tail_counts(1500, 10, 150) == [1500, 859, 492, 282, 161, 92, 53, 30, 17, 10]
    assert long_tail_counts(150, 10, 10) == [150, 116, 89, 69, 53, 41, 32, 25, 19, 15]


def test_cifar100_counts_end_at_n1_over_gamma() -> None:
    counts = long_tail_counts(150, 100, 10)
    assert counts[0] == 150 and counts[-1] == 15 and len(counts) == 100
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("name", sorted(EXPECTED_UNLABELED))
def test_unlabeled_distributions(name: str) -> None:
    assert DISTRIBUTIONS.get(name)(4000, 10, 100.0) == EXPECTED_UNLABELED[name]


def test_every_registered_distribution_is_a_permutation_or_uniform() -> None:
    for name in DISTRIBUTIONS:
        counts = DISTRIBUTIONS.get(name)(4000, 10, 100.0)
        assert sorted(counts) in (sorted(M_CONSISTENT), [4000] * 10), name


def test_split_counts_reads_the_config() -> None:
    cfg = DataConfig(n1=500, m1=4000, gamma_l=100, gamma_u=1, distribution="uniform")
    labeled, unlabeled = split_counts(cfg, 10)
    assert labeled[-1] == 5 and unlabeled == [4000] * 10


def test_unknown_distribution_names_it() -> None:
    with pytest.raises(KeyError, match="'revresed'.*did you mean 'reversed'"):
        split_counts(DataConfig(distribution="revresed"), 10)


def test_natural_counts_round_a_fraction() -> None:
    assert natural_split_counts([1000, 95, 14], 0.1) == ([100, 10, 1], [900, 85, 13])


def test_val_holdout_keeps_half_of_small_classes() -> None:
    assert val_holdout_counts([500, 10, 5, 1], 4) == [4, 4, 2, 0]


TARGETS = np.repeat(np.arange(3), 10)  # class k holds indices 10k .. 10k+9


def test_first_selection_takes_dataset_order_and_disjoint_unlabeled() -> None:
    per_class = class_order(TARGETS, 3, None)
    picked = select_indices(per_class, [3, 2, 1], [4, 4, 4], [0, 0, 0], contained=False)
    assert picked.labeled.tolist() == [0, 1, 2, 10, 11, 20]
    assert picked.unlabeled.tolist() == [3, 4, 5, 6, 12, 13, 14, 15, 21, 22, 23, 24]
    assert not set(picked.labeled) & set(picked.unlabeled)


def test_contained_unlabeled_starts_at_the_labeled_images() -> None:
    picked = select_indices(class_order(TARGETS, 3, None), [3, 2, 1], [4, 4, 4], [0, 0, 0], contained=True)
    assert set(picked.labeled) <= set(picked.unlabeled)
    assert len(picked.unlabeled) == 7 + 6 + 5


def test_val_is_the_end_of_the_labeled_selection() -> None:
    picked = select_indices(class_order(TARGETS, 3, None), [4, 2, 2], [1, 1, 1], [2, 1, 1], contained=False)
    assert picked.labeled.tolist() == [0, 1, 10, 20]
    assert picked.val.tolist() == [2, 3, 11, 21]
    assert picked.unlabeled.tolist() == [4, 12, 22]


def test_unused_val_follows_the_first_n_plus_m_and_keeps_every_label() -> None:
    counts = val_counts_for("unused", [4, 2, 2], 3)
    assert counts == [3, 3, 3] and val_counts_for("labeled", [4, 2, 2], 3) == [2, 1, 1]
    for contained in (False, True):
        picked = select_indices(class_order(TARGETS, 3, None), [4, 2, 2], [1, 1, 1], counts, contained, "unused")
        assert picked.labeled.tolist() == [0, 1, 2, 3, 10, 11, 20, 21]
        assert picked.val.tolist() == [5, 6, 7, 13, 14, 15, 23, 24, 25]
        assert not set(picked.val) & (set(picked.labeled) | set(picked.unlabeled))


def test_unused_val_larger_than_what_is_left_names_class_and_key() -> None:
    with pytest.raises(SplitError, match=r"class 'cat' has 2 training images left.*data.val_per_class=3"):
        check_counts(["dog", "cat"], [10, 10], [5, 8], [1, 2], allow_empty=False, unused_val=[3, 3])
    check_counts(["dog", "cat"], [10, 10], [5, 7], [1, 2], allow_empty=False, unused_val=[3, 3])


def test_shuffle_is_seeded() -> None:
    def labeled(seed: int) -> list[int]:
        return select_indices(class_order(TARGETS, 3, seed), [3, 3, 3], [2, 2, 2], [0] * 3, False).labeled.tolist()

    assert labeled(1) == labeled(1)
    assert labeled(1) != labeled(2)
    assert labeled(1) != [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert [i // 10 for i in labeled(1)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # still class-wise


def test_too_few_images_names_class_and_both_numbers() -> None:
    with pytest.raises(SplitError, match=r"class 'cat' has 10 training images but the split needs 12"):
        check_counts(["dog", "cat"], [10, 10], [5, 12], [1, 2], allow_empty=False)


def test_zero_labeled_class_is_an_error_unless_allowed() -> None:
    with pytest.raises(SplitError, match="class 'cat' gets 0 labeled images"):
        check_counts(["dog", "cat"], [10, 10], [5, 3], [1, 0], allow_empty=False)
    check_counts(["dog", "cat"], [10, 10], [5, 3], [1, 0], allow_empty=True)
