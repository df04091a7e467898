"""Datasets, registered by `DataConfig.dataset`: each returns its raw `SourceData`.

- cifar10 / cifar100 / stl10: torchvision's datasets under ``data.root`` (downloaded there when
  ``data.download`` is true), or, when ``data.root`` has a ``train/`` folder, the same data as
  an ImageFolder tree (see imagefolder). CIFAR-10/100 and STL-10 label names are alphabetical,
  so the sorted folder order is the torchvision class order, and "dataset order" within a class
  is the sorted file order (export the files in torchvision order, e.g. 0000.jpg, 0001.jpg, ...,
  to reproduce the torchvision protocol image for image).
- stl10: the labeled ``train`` split (500 per class) is the labeled pool; all 100k ``unlabeled``
  images are the unlabeled set (hidden labels unknown, -1), data.m1 is ignored.
- imagefolder: ``root/train/<class>/*``, ``root/test/<class>/*`` and, optionally,
  ``root/unlabeled/*`` (any depth, no labels; used whole as the unlabeled set, data.m1 ignored).
  With data.distribution=natural the test folder is optional (a hold-out of train replaces it).

Where the unlabeled set is separate (STL-10, root/unlabeled), data.m1, data.distribution and
data.labeled_in_unlabeled do not apply: the labeled images are the first N_k of train.
- smallimagenet127: the downsampled-ImageNet pickles used by ACR/SimPro/CoSSL, see
  `load_smallimagenet127`.

Class names come from the data (folder names, torchvision's ``classes``) unless
``data.class_names`` names a file with one name per line, in label order.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torchvision import datasets as tv_datasets

from ulfine.config import DataConfig
from ulfine.data.protocol import NATURAL
from ulfine.data.sources import (
    ArraySource,
    DatasetError,
    ImageSource,
    scan_class_folders,
    scan_unlabeled_folder,
)
from ulfine.registry import DATASETS

logger = logging.getLogger(__name__)


@dataclass
class SourceData:
    """A dataset before the LT protocol: its class names and raw image sources."""

    class_names: list[str]
    train: ImageSource  # labeled pool (and the unlabeled pool when `unlabeled` is None)
    test: ImageSource | None  # None: natural data without a test folder (held out of train)
    unlabeled: ImageSource | None = None  # a separate unlabeled set, used whole (STL-10's 100k)
    labeled_fraction: float | None = None  # natural long tail: label this share of each class
    # (instead of the N_1/gamma formula); the rest is unlabeled


SMALLIMAGENET_LABELED_FRACTION = 0.1  # SimPro/CoSSL's Small-ImageNet-127 labeled share

# DATASETS (ulfine.registry): DataConfig -> SourceData; a dataset with options of its own declares
# them with @DATASETS.register(name, config=...) and reads them from cfg.options (data.<name>.*)


def has_folder_layout(root: Path) -> bool:
    return (root / "train").is_dir()


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """One class name per line (blank lines ignored); the count must match the data."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"data.class_names file '{path}' does not exist")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != num_classes:
        raise DatasetError(
            f"data.class_names file '{path}' lists {len(names)} names but the dataset has {num_classes} classes"
        )
    return names


def load_source_data(cfg: DataConfig) -> SourceData:
    """The registered dataset ``cfg.dataset``, with names from ``cfg.class_names`` if given."""
    data = DATASETS.get(cfg.dataset)(cfg)
    if cfg.class_names is not None:
        data.class_names = read_class_names(cfg.class_names, len(data.class_names))
    return data


@DATASETS.register("imagefolder")
def load_imagefolder(cfg: DataConfig) -> SourceData:
    """``root/{train,test}/<class>/*`` (+ optional ``root/unlabeled/*``); sorted names = classes."""
    root = Path(cfg.root)
    train_names, train = scan_class_folders(root / "train", cfg.bad_images, cfg.max_image_pixels)
    unlabeled_dir = root / "unlabeled"
    unlabeled = (scan_unlabeled_folder(unlabeled_dir, cfg.bad_images, cfg.max_image_pixels)
                 if unlabeled_dir.is_dir() else None)
    if cfg.distribution == NATURAL and not (root / "test").is_dir():
        return SourceData(train_names, train, None, unlabeled)
    test_names, test = scan_class_folders(root / "test", cfg.bad_images, cfg.max_image_pixels)
    if train_names != test_names:
        only_train = sorted(set(train_names) - set(test_names))
        only_test = sorted(set(test_names) - set(train_names))
        raise DatasetError(
            f"class folders differ between '{root / 'train'}' and '{root / 'test'}': "
            f"only in train: {only_train or 'none'}; only in test: {only_test or 'none'}"
        )
    return SourceData(train_names, train, test, unlabeled)


def open_torchvision(cls: type, cfg: DataConfig, **kwargs: Any) -> Any:
    """A torchvision dataset, or an error saying where to put it / how to download it."""
    try:
        return cls(cfg.root, download=cfg.download, **kwargs)
    except RuntimeError as err:
        raise DatasetError(
            f"{cls.__name__} not found under data.root='{cfg.root}' ({err}). Set data.download=true "
            f"to download it there, or point data.root at a folder holding torchvision's "
            f"'{cls.base_folder}' files or an ImageFolder tree root/train/<class>/*, root/test/<class>/*"
        ) from err


def load_torchvision_cifar(cls: type, cfg: DataConfig) -> SourceData:
    if has_folder_layout(Path(cfg.root)):
        return load_imagefolder(cfg)
    train = open_torchvision(cls, cfg, train=True)
    test = open_torchvision(cls, cfg, train=False)
    name = cls.__name__
    return SourceData(
        list(train.classes),
        ArraySource(train.data, np.asarray(train.targets), f"{name} train"),
        ArraySource(test.data, np.asarray(test.targets), f"{name} test"),
    )


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> SourceData:
    return load_torchvision_cifar(tv_datasets.CIFAR10, cfg)


@DATASETS.register("cifar100")
def load_cifar100(cfg: DataConfig) -> SourceData:
    return load_torchvision_cifar(tv_datasets.CIFAR100, cfg)


def stl10_source(stl: Any, split: str) -> ArraySource:
    """torchvision's STL10 data [N, 3, 96, 96] (already un-column-majored) as HWC images."""
    return ArraySource(stl.data.transpose(0, 2, 3, 1), np.asarray(stl.labels), f"STL10 {split}")


@DATASETS.register("stl10")
def load_stl10(cfg: DataConfig) -> SourceData:
    if has_folder_layout(Path(cfg.root)):
        data = load_imagefolder(cfg)
        if data.unlabeled is None:
            raise DatasetError(f"STL-10 folder '{cfg.root}' lacks 'unlabeled/' (the 100k unlabeled images)")
        return data
    # each open md5-checks all files (2.6 GB of unlabeled_X.bin): open every split once
    splits = {split: open_torchvision(tv_datasets.STL10, cfg, split=split)
              for split in ("train", "test", "unlabeled")}
    return SourceData(
        list(splits["test"].classes), *(stl10_source(stl, split) for split, stl in splits.items())
    )


def read_downsampled_batches(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Downsampled-ImageNet pickles -> (images [N, S, S, 3] uint8, labels [N] from 0)."""
    images, labels = [], []
    for path in files:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
            raise DatasetError(f"'{path}' is not a downsampled-ImageNet batch (a dict with 'data' and 'labels')")
        images.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.append(np.asarray(entry["labels"], dtype=np.int64) - 1)
    data = np.concatenate(images)
    side = int(round((data.shape[1] / 3) ** 0.5))
    if 3 * side * side != data.shape[1]:
        raise DatasetError(f"rows of {data.shape[1]} bytes in {files[0].parent} are not 3 x S x S images")
    return data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1), np.concatenate(labels)


@DATASETS.register("smallimagenet127")
def load_smallimagenet127(cfg: DataConfig) -> SourceData:
    """Small-ImageNet-127 at 32 or 64 px, as prepared for ACR/SimPro/CoSSL.

    ``data.root`` holds ``train_data_batch_1`` ... ``train_data_batch_10`` and ``val_data``:
    Python pickles (downsampled-ImageNet format) of dicts with ``'data'``: uint8 [n, 3*S*S]
    (channel planes R, G, B, each S x S row-major) and ``'labels'``: ints 1..127. The natural
    long tail is kept: as in SimPro/CoSSL, each class labels round(10% of n_k) of its images
    (data.n1/m1/gamma are ignored), the rest are unlabeled; ``val_data`` is the test set. The
    files carry no class names: give ``data.class_names`` (127 lines, in label order) for text
    prototypes, else they are 'class_<k>'."""
    root = Path(cfg.root)
    train_files = sorted(root.glob("train_data_batch_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not train_files or not (root / "val_data").is_file():
        raise DatasetError(
            f"Small-ImageNet-127 not found in data.root='{root}': expected train_data_batch_1..10 "
            "and val_data (downsampled-ImageNet pickles, see the ACR/CoSSL repositories for how to make them)"
        )
    train_x, train_y = read_downsampled_batches(train_files)
    test_x, test_y = read_downsampled_batches([root / "val_data"])
    num_classes = int(train_y.max()) + 1
    if cfg.class_names is None:
        logger.warning("smallimagenet127 has no class names; set data.class_names for text prototypes")
    return SourceData(
        [f"class_{k}" for k in range(num_classes)],
        ArraySource(train_x, train_y, "Small-ImageNet-127 train"),
        ArraySource(test_x, test_y, "Small-ImageNet-127 val"),
        labeled_fraction=SMALLIMAGENET_LABELED_FRACTION,
    )
