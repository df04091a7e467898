"""data.distribution=natural: a user's own folder used as it is (every labeled image, all of unlabeled/)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ulfine.cli import main
from ulfine.config import DataConfig
from ulfine.data import build_ltssl_data
from ulfine.metrics.accuracy import class_groups

from .conftest import make_tree

COUNTS = {"ant": 60, "bee": 35, "cow": 20, "dog": 13, "eel": 8}  # 136 labeled images
PREPROCESS = {"size": (32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
              "resize_mode": "shortest"}


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_tree(tmp_path_factory.mktemp("own") / "data", COUNTS, {name: 2 for name in COUNTS}, unlabeled=7)
    (root / "unlabeled" / "nested").mkdir()
    (root / "unlabeled" / "000.png").rename(root / "unlabeled" / "nested" / "000.png")  # any depth
    return root


def data_json(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[dict, str]:
    out = tmp_path / "counts.json"
    code = main(["--log-level", "WARNING", "data", "data.dataset=imagefolder", f"data.root={root}",
                 "data.distribution=natural", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_natural_uses_every_labeled_image_and_all_unlabeled(
    own_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    record, table = data_json(own_folder, tmp_path, capsys)
    assert record["labeled_counts"] == list(COUNTS.values()) and sum(record["labeled_counts"]) == 136
    assert record["unlabeled_counts"] is None and record["test_counts"] == [2] * 5
    # 5 classes, none above 100 labeled images: thirds by count (2 / 2 / 1)
    assert record["groups"] == {"head": [0, 1], "medium": [2, 3], "tail": [4]}
    total = table.splitlines()[-2]
    assert total.split() == ["total", "136", "7", "10"]


def test_the_train_data_builder_uses_the_same_images(own_folder: Path) -> None:
    data = build_ltssl_data(DataConfig(dataset="imagefolder", root=str(own_folder), distribution="natural"),
                            PREPROCESS)
    assert len(data.labeled) == 136 and len(data.unlabeled) == 7 and len(data.test) == 10
    assert data.labeled_counts == list(COUNTS.values())
    assert data.groups == {"head": [0, 1], "medium": [2, 3], "tail": [4]}


def test_without_a_test_folder_a_stated_share_is_held_out(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_tree(tmp_path / "data", COUNTS, {}, unlabeled=2)
    record, _ = data_json(root, tmp_path, capsys)
    held = [12, 7, 4, 3, 2]  # round(0.2 * n_k), data.test_holdout's default
    assert record["test_counts"] == held
    assert record["labeled_counts"] == [n - h for n, h in zip(COUNTS.values(), held)]
    assert "data.test_holdout=0.2" in caplog.text
    data = build_ltssl_data(DataConfig(dataset="imagefolder", root=str(root), distribution="natural"), PREPROCESS)
    assert set(data.test.indices).isdisjoint(data.labeled.indices)


def test_synthetic_protocols_still_need_a_test_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_tree(tmp_path / "data", COUNTS, {})
    code = main(["data", "data.dataset=imagefolder", f"data.root={root}", "data.n1=8", "data.m1=0",
                 "data.gamma_l=2", "--json", str(tmp_path / "c.json")])
    assert code == 2 and "test" in capsys.readouterr().err


@pytest.mark.parametrize("counts, natural, expected", [
    ([500, 299, 179, 107, 64, 38, 23, 13, 8, 5], True,
     {"head": [0, 1, 2, 3], "medium": [4, 5, 6], "tail": [7, 8, 9]}),
    ([300, 150, 90, 50, 30, 25, 15, 10, 8], True,  # thresholds: 2 / 4 / 3, thirds would be 3 / 3 / 3
     {"head": [0, 1], "medium": [2, 3, 4, 5], "tail": [6, 7, 8]}),
    ([300, 150, 90, 50, 30, 25, 15, 10, 8], False, {"head": [0, 1, 2], "medium": [3, 4, 5], "tail": [6, 7, 8]}),
    ([500, 400, 300, 200, 150, 120], True, {"head": [0, 1], "medium": [2, 3], "tail": [4, 5]}),  # none < 20
])
def test_group_rule(counts: list[int], natural: bool, expected: dict) -> None:
    assert class_groups(counts, natural=natural) == expected


def test_gamma_warning_only_when_unlabeled_images_come_from_train(
    own_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ulfine.data import build_splits

    cfg = DataConfig(dataset="imagefolder", root=str(own_folder), n1=8, gamma_l=2, gamma_u=4)
    build_splits(cfg)  # unlabeled/ is separate: gamma_u plays no part
    assert "gamma_u" not in caplog.text
    (own_folder / "unlabeled").rename(own_folder / "elsewhere")
    try:
        build_splits(DataConfig(dataset="imagefolder", root=str(own_folder), n1=8, m1=4, gamma_l=2, gamma_u=4))
    finally:
        (own_folder / "elsewhere").rename(own_folder / "unlabeled")
    assert "gamma_u=4 != gamma_l=2" in caplog.text
