"""Top level: config -> LT splits (`build_splits`, counts only) -> view datasets (`build_ltssl_data`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ulfine.config import DataConfig
from ulfine.data.datasets import SourceData, load_source_data
from ulfine.data.protocol import (
    check_counts,
    class_order,
    natural_split_counts,
    select_indices,
    split_counts,
    val_holdout_counts,
)
from ulfine.data.sources import ImageSource
from ulfine.data.transforms import build_transforms
from ulfine.data.views import Views

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
    labeled_counts: list[int]  # per class, after the validation hold-out
    unlabeled_counts: list[int] | None  # true per-class counts from hidden labels; None if unknown
    val_counts: list[int]
    test_counts: list[int]


def class_counts(targets: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(targets, minlength=num_classes).tolist()


def protocol_counts(cfg: DataConfig, data: SourceData, class_sizes: list[int]) -> tuple[list[int], list[int]]:
    """(N_k, M_k taken from the training pool): M_k = 0 when the unlabeled set is separate."""
    if data.labeled_fraction is not None:
        labeled, unlabeled = natural_split_counts(class_sizes, data.labeled_fraction)
    else:
        labeled, unlabeled = split_counts(cfg, len(data.class_names))
    if data.unlabeled is not None:
        unlabeled = [0] * len(labeled)
    return labeled, unlabeled


def build_splits(cfg: DataConfig) -> LTSSLSplits:
    """Load ``cfg.dataset`` and apply the LT protocol; opens no image file."""
    data = load_source_data(cfg)
    num_classes = len(data.class_names)
    targets = data.train.targets
    class_sizes = class_counts(targets, num_classes)
    labeled, unlabeled = protocol_counts(cfg, data, class_sizes)
    needed = [n + m for n, m in zip(labeled, unlabeled)]
    check_counts(data.class_names, class_sizes, needed, labeled, cfg.allow_empty_classes)
    per_class = class_order(targets, num_classes, cfg.split_seed if cfg.selection == "shuffle" else None)
    val_counts = val_holdout_counts(labeled, cfg.val_per_class)
    picked = select_indices(per_class, labeled, unlabeled, val_counts, cfg.labeled_in_unlabeled)
    unlabeled_source = data.unlabeled if data.unlabeled is not None else data.train
    unlabeled_indices = (
        np.arange(len(data.unlabeled), dtype=np.int64) if data.unlabeled is not None else picked.unlabeled
    )
    hidden = unlabeled_source.targets[unlabeled_indices]
    return LTSSLSplits(
        class_names=data.class_names,
        source=data,
        unlabeled_source=unlabeled_source,
        labeled_indices=picked.labeled,
        unlabeled_indices=unlabeled_indices,
        val_indices=picked.val,
        labeled_counts=class_counts(targets[picked.labeled], num_classes),
        unlabeled_counts=None if np.any(hidden < 0) else class_counts(hidden, num_classes),
        val_counts=val_counts,
        test_counts=class_counts(data.test.targets, num_classes),
    )


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
    test_counts: list[int]
    labeled_indices: np.ndarray
    unlabeled_indices: np.ndarray


def build_ltssl_data(data_cfg: DataConfig, preprocess_cfg: dict[str, Any]) -> LTSSLData:
    """Splits + views; ``preprocess_cfg`` is ``open_clip.get_model_preprocess_cfg(model)``."""
    splits = build_splits(data_cfg)
    views = build_transforms(preprocess_cfg, data_cfg)
    policy = data_cfg.bad_images
    train, test = splits.source.train, splits.source.test
    val = Views(train, splits.val_indices, {"image": views.eval}, policy, substitute=False) \
        if len(splits.val_indices) else None
    return LTSSLData(
        class_names=splits.class_names,
        labeled=Views(train, splits.labeled_indices, {"image": views.weak}, policy),
        unlabeled=Views(
            splits.unlabeled_source, splits.unlabeled_indices, {"weak": views.weak, "strong": views.strong}, policy
        ),
        val=val,
        test=Views(test, np.arange(len(test)), {"image": views.eval}, policy, substitute=False),
        labeled_counts=splits.labeled_counts,
        unlabeled_counts=splits.unlabeled_counts,
        test_counts=splits.test_counts,
        labeled_indices=splits.labeled_indices,
        unlabeled_indices=splits.unlabeled_indices,
    )
