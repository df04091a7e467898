"""Datasets and splits from ImageFolder trees, and the errors that name the culprit."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from ulfine.config import DataConfig
from ulfine.data import DATASETS, BadImageError, DatasetError, SplitError, build_splits
from ulfine.data.build import count_table

CfgMaker = Callable[..., DataConfig]
TreeMaker = Callable[..., Path]


def test_registry_lists_the_issue_datasets() -> None:
    assert {"cifar10", "cifar100", "stl10", "smallimagenet127", "imagefolder"} <= set(DATASETS)


def test_imagefolder_splits_follow_the_protocol(tree: Path, folder_cfg: CfgMaker) -> None:
    splits = build_splits(folder_cfg(tree))
    assert splits.class_names == ["a", "b", "c"]
    assert splits.labeled_counts == [4, 2, 1]
    assert splits.unlabeled_counts == [6, 3, 1]
    assert splits.test_counts == [2, 2, 2]
    paths = splits.source.train.paths
    assert [Path(paths[i]).name for i in splits.labeled_indices[:4]] == ["000.png", "001.png", "002.png", "003.png"]
    assert not set(splits.labeled_indices) & set(splits.unlabeled_indices)


def test_contained_and_val_options(tree: Path, folder_cfg: CfgMaker) -> None:
    splits = build_splits(folder_cfg(tree, labeled_in_unlabeled=True, val_per_class=2))
    assert splits.val_counts == [2, 1, 0]
    assert splits.labeled_counts == [2, 1, 1]
    assert set(splits.labeled_indices) | set(splits.val_indices) <= set(splits.unlabeled_indices)
    assert splits.unlabeled_counts == [10, 5, 2]


def test_val_from_unused_images_is_balanced_and_leaves_training_data_as_without_val(
    tree: Path, folder_cfg: CfgMaker
) -> None:
    plain = build_splits(folder_cfg(tree))
    splits = build_splits(folder_cfg(tree, val_per_class=2, val_source="unused"))
    assert splits.val_counts == [2, 2, 2] and splits.labeled_counts == plain.labeled_counts
    assert np.array_equal(splits.labeled_indices, plain.labeled_indices)
    assert np.array_equal(splits.unlabeled_indices, plain.unlabeled_indices)
    assert not set(splits.val_indices) & (set(splits.labeled_indices) | set(splits.unlabeled_indices))
    assert np.bincount(splits.source.train.targets[splits.val_indices]).tolist() == [2, 2, 2]
    table = count_table(splits).splitlines()
    assert table[0].split() == ["class", "group", "labeled", "unlabeled", "val", "test"]
    assert table[-1].split() == ["total", "7", "10", "6", "6"]
    assert "val" not in count_table(plain).splitlines()[0].split()
    with pytest.raises(SplitError, match="class 'a' has 2 training images left.*val_source=labeled"):
        build_splits(folder_cfg(tree, val_per_class=3, val_source="unused"))  # a uses 4 + 6 of its 12


@pytest.mark.parametrize("contained", [False, True])
def test_oracle_labels_add_the_unlabeled_images_with_their_labels_and_keep_the_groups(
    tree: Path, folder_cfg: CfgMaker, contained: bool
) -> None:
    plain = build_splits(folder_cfg(tree, labeled_in_unlabeled=contained))
    oracle = build_splits(folder_cfg(tree, labeled_in_unlabeled=contained, oracle_labels=True))
    # N = 4, 2, 1 and M = 6, 3, 1: N + M per class, also when the labeled images are inside the unlabeled set
    assert oracle.labeled_counts == [10, 5, 2]
    assert sorted(oracle.labeled_indices) == sorted(set(plain.labeled_indices) | set(plain.unlabeled_indices))
    assert len(set(oracle.labeled_indices)) == len(oracle.labeled_indices)
    assert np.array_equal(oracle.labeled_indices[: len(plain.labeled_indices)], plain.labeled_indices)
    assert np.array_equal(oracle.unlabeled_indices, plain.unlabeled_indices)  # methods still get their stream
    assert oracle.groups == plain.groups  # head / medium / tail of the protocol's long tail


def test_oracle_labels_never_add_validation_images(tree: Path, folder_cfg: CfgMaker) -> None:
    # ACR's convention: the unlabeled set (first N_k + M_k) holds the held-out validation images too
    plain = build_splits(folder_cfg(tree, labeled_in_unlabeled=True, val_per_class=2))
    oracle = build_splits(folder_cfg(tree, labeled_in_unlabeled=True, val_per_class=2, oracle_labels=True))
    assert set(plain.val_indices) <= set(plain.unlabeled_indices) and len(plain.val_indices) == 3
    assert not set(oracle.val_indices) & set(oracle.labeled_indices)
    assert oracle.labeled_counts == [8, 4, 2]  # N_k + M_k = 10, 5, 2 less V_k = 2, 1, 0


def test_oracle_labels_need_labeled_unlabeled_images(
    tmp_path: Path, folder_cfg: CfgMaker, tree_factory: TreeMaker
) -> None:
    root = tree_factory(tmp_path, {"a": 5, "b": 5}, {"a": 1, "b": 1}, unlabeled=7)
    with pytest.raises(SplitError, match="oracle_labels=true needs unlabeled images with known labels.*imagefolder"):
        build_splits(folder_cfg(root, n1=3, gamma_l=3.0, oracle_labels=True))


def test_unlabeled_folder_is_used_whole_with_unknown_labels(
    tmp_path: Path, folder_cfg: CfgMaker, tree_factory: TreeMaker
) -> None:
    root = tree_factory(tmp_path, {"a": 5, "b": 5}, {"a": 1, "b": 1}, unlabeled=7)
    splits = build_splits(folder_cfg(root, n1=3, gamma_l=3.0))
    assert len(splits.unlabeled_indices) == 7 and splits.unlabeled_counts is None
    assert splits.labeled_counts == [3, 1]


def test_stl10_folder_needs_its_unlabeled_images(tree: Path, folder_cfg: CfgMaker) -> None:
    with pytest.raises(DatasetError, match="lacks 'unlabeled/'"):
        build_splits(folder_cfg(tree, dataset="stl10"))


def test_class_names_file(tree: Path, tmp_path: Path, folder_cfg: CfgMaker) -> None:
    names = tmp_path / "names.txt"
    names.write_text("apple\nbanana\ncherry\n")
    assert build_splits(folder_cfg(tree, class_names=str(names))).class_names == ["apple", "banana", "cherry"]
    names.write_text("apple\nbanana\n")
    with pytest.raises(DatasetError, match="lists 2 names but the dataset has 3 classes"):
        build_splits(folder_cfg(tree, class_names=str(names)))


def test_mismatched_class_folders_name_the_differences(
    tmp_path: Path, folder_cfg: CfgMaker, tree_factory: TreeMaker
) -> None:
    root = tree_factory(tmp_path, {"a": 3, "b": 3}, {"a": 1, "z": 1})
    with pytest.raises(DatasetError, match=r"only in train: \['b'\]; only in test: \['z'\]"):
        build_splits(folder_cfg(root))


def test_empty_class_folder_is_named(tree: Path, folder_cfg: CfgMaker) -> None:
    (tree / "train" / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images.*empty"):
        build_splits(folder_cfg(tree))


def test_non_image_file_is_named_or_skipped(tree: Path, folder_cfg: CfgMaker) -> None:
    (tree / "train" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(BadImageError, match="notes.txt"):
        build_splits(folder_cfg(tree))
    splits = build_splits(folder_cfg(tree, bad_images="skip"))
    assert len(splits.source.train) == 36


def test_too_few_images_names_the_class(tree: Path, folder_cfg: CfgMaker) -> None:
    with pytest.raises(SplitError, match="class 'a' has 12 training images but the split needs 14"):
        build_splits(folder_cfg(tree, n1=4, m1=10))


def test_zero_labeled_class(tree: Path, folder_cfg: CfgMaker) -> None:
    with pytest.raises(SplitError, match="class 'c' gets 0 labeled images"):
        build_splits(folder_cfg(tree, n1=4, gamma_l=5.0))
    assert build_splits(folder_cfg(tree, n1=4, gamma_l=5.0, allow_empty_classes=True)).labeled_counts[2] == 0


def test_missing_torchvision_dataset_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="CIFAR10 not found under data.root=.*data.download=true"):
        build_splits(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))


def write_batch(path: Path, labels: list[int], side: int) -> None:
    data = np.random.default_rng(len(labels)).integers(0, 256, (len(labels), 3 * side * side), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({"data": data, "labels": labels}, f)


def test_smallimagenet_pickles_keep_the_natural_tail(tmp_path: Path) -> None:
    write_batch(tmp_path / "train_data_batch_1", [1] * 30 + [2] * 10, side=8)
    write_batch(tmp_path / "train_data_batch_2", [1] * 10 + [3] * 20, side=8)
    write_batch(tmp_path / "val_data", [1, 2, 3], side=8)
    splits = build_splits(DataConfig(dataset="smallimagenet127", root=str(tmp_path)))
    assert splits.labeled_counts == [4, 1, 2]  # 10% of [40, 10, 20]
    assert splits.unlabeled_counts == [36, 9, 18]
    assert splits.test_counts == [1, 1, 1]
    assert splits.source.train.load(0).size == (8, 8)
