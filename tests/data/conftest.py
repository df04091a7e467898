"""Tiny ImageFolder trees written with PIL in tmp_path."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from ulfine.config import DataConfig


def write_image(path: Path, seed: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_tree(root: Path, train: dict[str, int], test: dict[str, int], unlabeled: int = 0) -> Path:
    """root/train/<class>/NNN.png (train[class] files), root/test/..., root/unlabeled/NNN.png."""
    seed = 0
    for split, per_class in (("train", train), ("test", test)):
        for name, count in per_class.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed += 1
                write_image(root / split / name / f"{i:03d}.png", seed)
    for i in range(unlabeled):
        write_image(root / "unlabeled" / f"{i:03d}.png", 10_000 + i)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """3 classes x 12 training images, 2 test images each."""
    return make_tree(tmp_path / "data", {"a": 12, "b": 12, "c": 12}, {"a": 2, "b": 2, "c": 2})


def imagefolder_cfg(root: Path, **overrides: object) -> DataConfig:
    """An imagefolder config whose protocol fits the 12-image classes: N = 4,2,1; M = 6,3,1."""
    values: dict[str, object] = dict(dataset="imagefolder", root=str(root), n1=4, m1=6, gamma_l=4.0, gamma_u=4.0)
    values.update(overrides)
    return DataConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def folder_cfg() -> Callable[..., DataConfig]:
    return imagefolder_cfg


@pytest.fixture
def tree_factory() -> Callable[..., Path]:
    return make_tree
