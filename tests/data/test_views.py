"""Weak/strong/eval views, the built datasets' item layout, and bad-image handling."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from ulfine.config import DataConfig
from ulfine.data import BadImageError, build_ltssl_data, build_transforms
from ulfine.data.sources import FileSource
from ulfine.data.transforms import FIXMATCH_OPS, FixMatchRandAugment, cutout_abs
from ulfine.data.views import Views

CfgMaker = Callable[..., DataConfig]
PREPROCESS = {"size": 32, "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2), "interpolation": "bicubic"}


def test_views_follow_the_model_preprocess_cfg(tiny_clip: open_clip.CLIP) -> None:
    views = build_transforms(open_clip.get_model_preprocess_cfg(tiny_clip), DataConfig())
    image = Image.new("RGB", (48, 40), (128, 64, 32))
    for transform in (views.weak, views.strong, views.eval):
        assert transform(image).shape == (3, 32, 32)


def test_mean_and_std_come_from_the_cfg() -> None:
    image = Image.new("RGB", (32, 32), (255, 255, 255))
    out = build_transforms(PREPROCESS, DataConfig()).eval(image)
    assert torch.allclose(out[:, 0, 0], torch.tensor([2.5, 3.0, 3.5]))


def test_unknown_preprocess_key_is_named() -> None:
    with pytest.raises(ValueError, match="'sise'"):
        build_transforms({"sise": 32}, DataConfig())


def test_items_and_strong_differs_from_weak(tree: Path, folder_cfg: CfgMaker) -> None:
    torch.manual_seed(0)
    data = build_ltssl_data(folder_cfg(tree, val_per_class=1), PREPROCESS)
    labeled, unlabeled, test = data.labeled[0], data.unlabeled[0], data.test[0]
    assert set(labeled) == {"image", "label", "index"} and labeled["image"].shape == (3, 32, 32)
    assert set(unlabeled) == {"weak", "strong", "label", "index"}
    assert unlabeled["index"] == data.unlabeled_indices[0] and unlabeled["label"] == 0
    assert not torch.equal(unlabeled["weak"], unlabeled["strong"])
    assert set(test) == {"image", "label", "index"}
    assert data.val is not None and len(data.val) == 2  # N = 4, 2, 1 -> V = 1, 1, 0 (at most N // 2)
    assert data.labeled_counts == [3, 1, 1]


def corrupt_source(tmp_path: Path) -> FileSource:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (8, 8)).save(good)
    bad.write_bytes(good.read_bytes()[:20])  # truncated PNG
    return FileSource([str(bad), str(good)], torch.tensor([0, 1]).numpy())


def test_corrupt_image_error_names_the_file(tmp_path: Path) -> None:
    views = Views(corrupt_source(tmp_path), [0, 1], {}, bad_images="error")
    with pytest.raises(BadImageError, match="bad.png"):
        views[0]


def test_corrupt_image_skip_serves_the_next_and_counts(tmp_path: Path) -> None:
    views = Views(corrupt_source(tmp_path), [0, 1], {}, bad_images="skip")
    assert views[0] == {"label": 1, "index": 1}
    assert views.skipped == 1


def test_a_sample_seed_fixes_the_augmentation_and_spares_the_global_rng(tree: Path, folder_cfg: CfgMaker) -> None:
    data = build_ltssl_data(folder_cfg(tree), PREPROCESS)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first, again = data.unlabeled[(0, 123)], data.unlabeled[(0, 123)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first["strong"], again["strong"]) and torch.equal(first["weak"], again["weak"])
    other = data.unlabeled[(0, 124)]
    assert not torch.equal(first["strong"], other["strong"])


def _recording_ops(calls: list[tuple[str, int]]) -> dict:
    """FixMatch's op names with ops that record (name, magnitude) instead of changing the image."""
    def record(name: str):
        return lambda img, v: calls.append((name, v)) or img
    return {name: record(name) for name in FIXMATCH_OPS}


def test_fixmatch_randaugment_draws_magnitudes_and_applies_each_op_half_the_time() -> None:
    calls: list[tuple[str, int]] = []
    augment = FixMatchRandAugment(num_ops=2, magnitude=10, ops=_recording_ops(calls))
    image = Image.new("RGB", (8, 8))
    torch.manual_seed(0)
    draws = 4000
    for _ in range(draws):
        augment(image)
    rate = len(calls) / (2 * draws)
    assert abs(rate - 0.5) < 0.03, f"each drawn op must apply with p = 1/2, got {rate:.3f}"
    magnitudes = Counter(v for _, v in calls)
    assert set(magnitudes) == set(range(1, 10)), "FixMatch draws v from randint(1, m): 1..m-1"
    expected = len(calls) / 9
    assert all(abs(count - expected) < 0.2 * expected for count in magnitudes.values())
    assert set(name for name, _ in calls) == set(FIXMATCH_OPS) and len(FIXMATCH_OPS) == 14


def test_fixmatch_ops_keep_size_and_mode_at_every_magnitude() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for name, op in FIXMATCH_OPS.items():
        for v in (1, 9):
            out = op(image, v)
            assert out.size == (32, 32) and out.mode == "RGB", name
    # Solarize at v = 9 inverts only pixels >= 26, never the whole image as threshold 0 would
    dark = Image.new("RGB", (4, 4), (10, 10, 10))
    assert np.asarray(FIXMATCH_OPS["Solarize"](dark, 9)).max() == 10


def test_cutout_square_is_at_most_half_the_side_and_grey() -> None:
    (cut,) = cutout_abs(0.5)
    torch.manual_seed(0)
    sides = []
    for _ in range(300):
        image = torch.zeros(3, 32, 32)
        grey = (cut(image) - 127 / 255).abs().sum(0) < 1e-6
        rows, cols = grey.any(1).nonzero(), grey.any(0).nonzero()
        assert grey.sum() > 0
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert height <= 16 and width <= 16 and grey.sum() == height * width
        sides.append(max(height, width))
    assert max(sides) == 16 and min(sides) < 16, "a full 16 px square inside, clipped at the border"
    assert cutout_abs(0.0) == []


def test_strong_option_selects_the_pipeline(tiny_clip: open_clip.CLIP) -> None:
    pcfg = open_clip.get_model_preprocess_cfg(tiny_clip)
    fixmatch = build_transforms(pcfg, DataConfig()).strong
    assert any(isinstance(t, FixMatchRandAugment) for t in fixmatch.transforms)
    former = build_transforms(pcfg, DataConfig(strong="torchvision")).strong
    assert any(isinstance(t, T.RandAugment) for t in former.transforms)
    with pytest.raises(ValueError, match="data.strong = 'other'"):
        build_transforms(pcfg, DataConfig(strong="other"))
