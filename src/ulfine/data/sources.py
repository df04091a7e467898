"""Image sources: labels plus a way to load image i, without opening files up front.

Two kinds cover every dataset: `ArraySource` (decoded uint8 arrays: torchvision CIFAR/STL,
Small-ImageNet pickles) and `FileSource` (image files: ImageFolder trees). Both load an RGB
PIL image by index and describe an index for error messages (the file path where there is one).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ulfine.errors import UlfineError

logger = logging.getLogger(__name__)

BadImagePolicy = Literal["error", "skip"]


class DatasetError(UlfineError, ValueError):
    """Dataset files that are missing, malformed or inconsistent; the message names them."""


class BadImageError(DatasetError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


class ImageSource:
    """Labels ``targets`` [N] (int64, -1 where unknown) and RGB images by index."""

    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        raise NotImplementedError


class ArraySource(ImageSource):
    """Decoded images ``data`` [N, H, W, 3] uint8; ``name`` labels them in messages."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, name: str) -> None:
        if len(data) != len(targets):
            raise DatasetError(f"{name}: {len(data)} images but {len(targets)} labels")
        self.data = data
        self.targets = np.asarray(targets, dtype=np.int64)
        self.name = name

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.data[index]).convert("RGB")

    def describe(self, index: int) -> str:
        return f"{self.name} image #{index}"


class FileSource(ImageSource):
    """Image files ``paths`` [N] with labels; decoding errors raise `BadImageError` naming the file."""

    def __init__(self, paths: list[str], targets: np.ndarray) -> None:
        self.paths = paths
        self.targets = np.asarray(targets, dtype=np.int64)

    def load(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")  # forces the full decode, so truncation shows here
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise BadImageError(f"cannot read image '{path}': {err}") from err

    def describe(self, index: int) -> str:
        return self.paths[index]


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMG_EXTENSIONS)


def _report_non_images(rejected: list[str], where: Path, policy: BadImagePolicy) -> None:
    """Non-image files: an error naming them, or (skip) a warning with the count."""
    if not rejected:
        return
    shown = ", ".join(rejected[:5]) + (" ..." if len(rejected) > 5 else "")
    if policy == "error":
        raise BadImageError(
            f"{len(rejected)} non-image file(s) under '{where}': {shown} "
            f"(allowed extensions: {', '.join(IMG_EXTENSIONS)}; data.bad_images=skip ignores them)"
        )
    logger.warning("skipped %d non-image file(s) under '%s': %s", len(rejected), where, shown)


def scan_class_folders(split_dir: Path, policy: BadImagePolicy) -> tuple[list[str], FileSource]:
    """``split_dir/<class>/*`` -> (sorted class names, files sorted within each class).

    Files are listed, never opened (50k files scan in well under a second). Hidden files
    (``.DS_Store``) are ignored; an empty class folder is an error naming it."""
    if not split_dir.is_dir():
        raise DatasetError(f"folder '{split_dir}' does not exist (expected <root>/{split_dir.name}/<class>/*)")
    class_names, class_to_idx = find_classes(split_dir)
    rejected: list[str] = []

    def accept(path: str) -> bool:
        if os.path.basename(path).startswith("."):
            return False
        if is_image_file(path):
            return True
        rejected.append(path)
        return False

    samples = make_dataset(split_dir, class_to_idx, is_valid_file=accept, allow_empty=True)
    _report_non_images(rejected, split_dir, policy)
    targets = np.array([t for _, t in samples], dtype=np.int64)
    empty = [name for k, name in enumerate(class_names) if not np.any(targets == k)]
    if empty:
        raise DatasetError(f"class folder(s) with no images under '{split_dir}': {', '.join(empty)}")
    return class_names, FileSource([p for p, _ in samples], targets)


def scan_unlabeled_folder(folder: Path, policy: BadImagePolicy) -> FileSource:
    """Every image file under ``folder`` (recursively, sorted); labels unknown (-1)."""
    paths, rejected = [], []
    for dirpath, _, filenames in sorted(os.walk(folder, followlinks=True)):
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            (paths if is_image_file(name) else rejected).append(os.path.join(dirpath, name))
    _report_non_images(rejected, folder, policy)
    if not paths:
        raise DatasetError(f"unlabeled folder '{folder}' holds no images")
    return FileSource(paths, np.full(len(paths), -1, dtype=np.int64))
