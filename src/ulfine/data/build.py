"""Top level: config -> LT splits (`build_splits`, counts only) -> view datasets (`build_ltssl_data`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ulfine.config import DataConfig
from ulfine.data.datasets import SourceData, load_source_data
from ulfine.data.protocol import (
    NATURAL,
    SplitError,
    check_counts,
    class_order,
    long_tail_counts,
    natural_split_counts,
    select_indices,
    split_counts,
    test_holdout_counts,
    val_counts_for,
)
from ulfine.data.sources import ImageSource
from ulfine.data.transforms import build_transforms
from ulfine.data.views import Views
from ulfine.metrics.accuracy import class_groups

logger = logging.getLogger(__name__)


@dataclass
class LTSSLSplits:
    """The protocol applied to a dataset: which images are labeled / unlabeled / val, and counts."""

    class_names: list[str]
    source: SourceData
    unlabeled_source: ImageSource  # source.train, or the dataset's separate unlabeled set
    labeled_indices: np.ndarray  # [N] int64 into source.train
    unlabeled_indices: np.ndarray  # [M] int64 into unlabeled_source
    val_indices: np.ndarray  # [V] int64 into source.train (empty without data.val_per_class)
    labeled_counts: list[int]  # per class, after the validation hold-out (val_source=labeled)
    unlabeled_counts: list[int] | None  # true per-class counts from hidden labels; None if unknown
    val_counts: list[int]
    test_counts: list[int]
    test_source: ImageSource  # source.test, or source.train when the test set is held out of it
    test_indices: np.ndarray  # [T] int64 into test_source
    groups: dict[str, list[int]]  # head / medium / tail class indices (`class_groups`)


def class_counts(targets: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(targets, minlength=num_classes).tolist()


def protocol_counts(cfg: DataConfig, data: SourceData, class_sizes: list[int]) -> tuple[list[int], list[int]]:
    """(N_k, M_k taken from the training pool): M_k = 0 when the unlabeled set is separate.

    ``class_sizes`` are the training images per class left after any test hold-out."""
    none = [0] * len(class_sizes)
    if cfg.distribution == NATURAL:
        return list(class_sizes), none
    if data.labeled_fraction is not None:
        return natural_split_counts(class_sizes, data.labeled_fraction)
    if data.unlabeled is not None:  # only the labeled long tail is drawn (no gamma_u / M_k)
        return long_tail_counts(cfg.n1, len(data.class_names), cfg.gamma_l), none
    return split_counts(cfg, len(data.class_names))


def hold_out_test(cfg: DataConfig, data: SourceData, per_class: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Natural data without a test set: the last ``test_holdout`` share of each class's images
    becomes the test set. Returns (the per-class training indices left, the test indices)."""
    held = test_holdout_counts([len(idx) for idx in per_class], cfg.test_holdout)
    logger.warning(
        "no test set in data.root='%s': holding out %d of the %d training images as the test set "
        "(data.test_holdout=%g of each class, at least 1)", cfg.root, sum(held), sum(map(len, per_class)),
        cfg.test_holdout,
    )
    kept = [idx[: len(idx) - h] for idx, h in zip(per_class, held)]
    test = np.concatenate([idx[len(idx) - h:] for idx, h in zip(per_class, held)]).astype(np.int64)
    return kept, test


def build_splits(cfg: DataConfig) -> LTSSLSplits:
    """Load ``cfg.dataset`` and apply the LT protocol; opens no image file."""
    data = load_source_data(cfg)
    num_classes = len(data.class_names)
    targets = data.train.targets
    per_class = class_order(targets, num_classes, cfg.split_seed if cfg.selection == "shuffle" else None)
    if data.test is None:
        per_class, test_indices = hold_out_test(cfg, data, per_class)
        test_source = data.train
    else:
        test_source, test_indices = data.test, np.arange(len(data.test), dtype=np.int64)
    class_sizes = [len(idx) for idx in per_class]
    labeled, unlabeled = protocol_counts(cfg, data, class_sizes)
    needed = [n + m for n, m in zip(labeled, unlabeled)]
    val_counts = val_counts_for(cfg.val_source, labeled, cfg.val_per_class)
    unused_val = val_counts if cfg.val_source == "unused" else None
    check_counts(data.class_names, class_sizes, needed, labeled, cfg.allow_empty_classes, unused_val)
    picked = select_indices(per_class, labeled, unlabeled, val_counts, cfg.labeled_in_unlabeled, cfg.val_source)
    unlabeled_source = data.unlabeled if data.unlabeled is not None else data.train
    unlabeled_indices = (
        np.arange(len(data.unlabeled), dtype=np.int64) if data.unlabeled is not None else picked.unlabeled
    )
    hidden = unlabeled_source.targets[unlabeled_indices]
    unlabeled_counts = None if np.any(hidden < 0) else class_counts(hidden, num_classes)
    protocol_labeled = class_counts(targets[picked.labeled], num_classes)
    labeled_indices = picked.labeled
    if cfg.oracle_labels:
        # the unlabeled indices point into the training set only when there is no separate unlabeled set
        known = data.unlabeled is None and unlabeled_counts is not None
        labeled_indices = with_oracle_labels(cfg, picked.labeled, unlabeled_indices, picked.val, known)
    labeled_counts = class_counts(targets[labeled_indices], num_classes)
    return LTSSLSplits(
        class_names=data.class_names,
        source=data,
        unlabeled_source=unlabeled_source,
        labeled_indices=labeled_indices,
        unlabeled_indices=unlabeled_indices,
        val_indices=picked.val,
        labeled_counts=labeled_counts,
        unlabeled_counts=unlabeled_counts,
        val_counts=val_counts,
        test_counts=class_counts(test_source.targets[test_indices], num_classes),
        test_source=test_source,
        test_indices=test_indices,
        groups=class_groups(protocol_labeled, natural=cfg.distribution == NATURAL),
    )


def with_oracle_labels(cfg: DataConfig, labeled: np.ndarray, unlabeled: np.ndarray, val: np.ndarray,
                       known: bool) -> np.ndarray:
    """data.oracle_labels: the labeled indices followed by the unlabeled ones neither labeled nor
    held out for validation (ACR's convention puts both in the unlabeled set too), all with their
    true labels. ``known``: the unlabeled images are training images with known labels."""
    if not known:
        raise SplitError(
            f"data.oracle_labels=true needs unlabeled images with known labels, drawn from the training "
            f"set; data.dataset='{cfg.dataset}' at data.root='{cfg.root}' has a separate unlabeled set "
            "without labels"
        )
    added = unlabeled[~np.isin(unlabeled, np.concatenate([labeled, val]))]
    return np.concatenate([labeled, added]).astype(np.int64)


def count_table(splits: LTSSLSplits | LTSSLData) -> str:
    """Per-class rows ``class | group | labeled | unlabeled | [val |] test`` plus a total row
    (the val column only with a validation split)."""
    unlabeled = splits.unlabeled_counts
    val = splits.val_counts if sum(splits.val_counts) else None
    group_of = {k: name for name, members in splits.groups.items() for k in members}
    rows = [("class", "group", "labeled", "unlabeled", *(("val",) if val else ()), "test")]
    for k, name in enumerate(splits.class_names):
        rows.append((name, group_of.get(k, ""), str(splits.labeled_counts[k]),
                     "?" if unlabeled is None else str(unlabeled[k]), *((str(val[k]),) if val else ()),
                     str(splits.test_counts[k])))
    rows.append(("total", "", str(sum(splits.labeled_counts)), str(len(splits.unlabeled_indices)),
                 *((str(sum(val)),) if val else ()), str(sum(splits.test_counts))))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}  {r[1]:<6}  {r[2]:>8}  {r[3]:>9}" + "".join(f"  {c:>6}" for c in r[4:])
                     for r in rows)


@dataclass
class LTSSLData:
    """Datasets ready for the trainer (items: see `ulfine.data.views`) plus the split facts."""

    class_names: list[str]
    labeled: Views  # {"image", "label", "index"}, weak view
    unlabeled: Views  # {"weak", "strong", "label" (hidden or -1), "index"}
    val: Views | None  # {"image", "label", "index"}, eval view; None without data.val_per_class
    test: Views  # {"image", "label", "index"}, eval view
    labeled_counts: list[int]
    unlabeled_counts: list[int] | None
    val_counts: list[int]
    test_counts: list[int]
    labeled_indices: np.ndarray
    unlabeled_indices: np.ndarray
    groups: dict[str, list[int]]  # head / medium / tail class indices


def build_ltssl_data(data_cfg: DataConfig, preprocess_cfg: dict[str, Any]) -> LTSSLData:
    """Splits + views; ``preprocess_cfg`` is ``open_clip.get_model_preprocess_cfg(model)``."""
    splits = build_splits(data_cfg)
    views = build_transforms(preprocess_cfg, data_cfg)
    policy = data_cfg.bad_images
    train = splits.source.train
    val = Views(train, splits.val_indices, {"image": views.eval}, policy, substitute=False) \
        if len(splits.val_indices) else None
    return LTSSLData(
        class_names=splits.class_names,
        labeled=Views(train, splits.labeled_indices, {"image": views.weak}, policy),
        unlabeled=Views(
            splits.unlabeled_source, splits.unlabeled_indices, {"weak": views.weak, "strong": views.strong}, policy
        ),
        val=val,
        test=Views(splits.test_source, splits.test_indices, {"image": views.eval}, policy, substitute=False),
        labeled_counts=splits.labeled_counts,
        unlabeled_counts=splits.unlabeled_counts,
        val_counts=splits.val_counts,
        test_counts=splits.test_counts,
        labeled_indices=splits.labeled_indices,
        unlabeled_indices=splits.unlabeled_indices,
        groups=splits.groups,
    )
