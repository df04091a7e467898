"""Each dataset from miniature files in its real on-disk format, through `ulfine data --json`
and the paper's own config: protocol counts, class names in torchvision's order, pixel layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.formats import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    STL10_CLASSES,
    skip_md5,  # noqa: F401  (fixture)
    write_cifar10,
    write_cifar100,
    write_smallimagenet,
    write_stl10,
)
from ulfine.cli import main
from ulfine.config import load_config
from ulfine.data import DatasetError, SplitError, build_splits

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def expected_tail(first: int, classes: int, gamma: float) -> list[int]:
    """ACR's make_imb_data, written out independently of ulfine.data.protocol."""
    return [int(first * gamma ** (-k / (classes - 1))) for k in range(classes - 1)] + [int(first / gamma)]


def ulfine_data(tmp_path: Path, config: str, *overrides: str) -> dict:
    out = tmp_path / "counts.json"
    code = main(["data", "--config", str(CONFIGS / config), *overrides, "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def assert_same_images(source, indices: np.ndarray, expected: np.ndarray) -> None:
    """The decoded images are the HWC arrays that were written (no transpose, no flip)."""
    for i in indices:
        assert np.array_equal(np.asarray(source.load(int(i))), expected[int(i)]), source.describe(int(i))


def test_class_name_lists_are_in_torchvision_order() -> None:
    """The real sets' label names are alphabetical; the lists here must be too (typo guard)."""
    for names, count in ((CIFAR10_CLASSES, 10), (CIFAR100_CLASSES, 100), (STL10_CLASSES, 10)):
        assert names == sorted(names) and len(set(names)) == count


def test_cifar10_batches(tmp_path: Path, skip_md5: None) -> None:
    written = write_cifar10(tmp_path / "cifar10", [12] * 10, [3] * 10)
    overrides = [f"data.root={tmp_path / 'cifar10'}", "data.download=false", "data.n1=5", "data.m1=6",
                 "data.gamma_l=5", "data.gamma_u=5"]
    record = ulfine_data(tmp_path, "cifar10_lt.yaml", *overrides)
    assert record["class_names"] == CIFAR10_CLASSES
    assert record["labeled_counts"] == expected_tail(5, 10, 5) == [5, 4, 3, 2, 2, 2, 1, 1, 1, 1]
    assert record["unlabeled_counts"] == expected_tail(6, 10, 5)
    assert record["test_counts"] == [3] * 10
    splits = build_splits(load_config(CONFIGS / "cifar10_lt.yaml", overrides).data)
    # dataset order within a class: the first labeled images of class 0 are its first in the batches
    assert splits.labeled_indices[:5].tolist() == np.flatnonzero(written["train_y"] == 0)[:5].tolist()
    assert_same_images(splits.source.train, splits.labeled_indices, written["train_x"])
    assert_same_images(splits.source.test, np.arange(5), written["test_x"])


def test_cifar100_pickles(tmp_path: Path, skip_md5: None) -> None:
    written = write_cifar100(tmp_path / "cifar100", [14] * 100, [2] * 100)
    record = ulfine_data(tmp_path, "cifar100_lt.yaml", f"data.root={tmp_path / 'cifar100'}",
                         "data.download=false", "data.n1=10", "data.m1=4")  # the config's gamma = 10
    assert record["class_names"] == CIFAR100_CLASSES
    assert record["labeled_counts"] == expected_tail(10, 100, 10)
    assert record["labeled_counts"][0] == 10 and record["labeled_counts"][-1] == 1
    assert record["unlabeled_counts"] == expected_tail(4, 100, 10)
    splits = build_splits(load_config(CONFIGS / "cifar100_lt.yaml", [f"data.root={tmp_path / 'cifar100'}",
                                                                     "data.n1=10", "data.m1=4"]).data)
    assert splits.source.train.targets.tolist() == written["train_y"].tolist()  # fine labels, not coarse
    assert_same_images(splits.source.train, splits.labeled_indices[:10], written["train_x"])
    assert record["test_counts"] == [2] * 100


def test_cifar100_tail_class_with_zero_labeled_images_is_named(tmp_path: Path, skip_md5: None) -> None:
    write_cifar100(tmp_path / "cifar100", [14] * 100, [2] * 100)
    with pytest.raises(SplitError, match="class 'rose' gets 0 labeled images"):  # class 70: int(5 * 10 ** (-70/99))
        build_splits(load_config(CONFIGS / "cifar100_lt.yaml", [f"data.root={tmp_path / 'cifar100'}",
                                                                "data.n1=5", "data.m1=4"]).data)


def test_stl10_binaries(tmp_path: Path, skip_md5: None, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "stl10"
    written = write_stl10(root, [16] * 10, [2] * 10, unlabeled=7)
    record = ulfine_data(tmp_path, "stl10_lt.yaml", f"data.root={root}", "data.download=false", "data.n1=15")
    assert record["class_names"] == STL10_CLASSES
    assert record["labeled_counts"] == expected_tail(15, 10, 10) == [15, 11, 8, 6, 5, 4, 3, 2, 1, 1]
    assert record["unlabeled_counts"] is None  # STL-10's unlabeled labels are unknown
    assert record["test_counts"] == [2] * 10
    from torchvision.datasets import stl10

    checked: list[str] = []
    monkeypatch.setattr(stl10, "check_integrity", lambda path, md5=None: checked.append(Path(path).name) or True)
    splits = build_splits(load_config(CONFIGS / "stl10_lt.yaml", [f"data.root={root}", "data.n1=15"]).data)
    assert checked.count("unlabeled_X.bin") == 3  # each split opened (and md5-checked, 2.6 GB) once
    assert splits.unlabeled_source is splits.source.unlabeled
    assert splits.unlabeled_indices.tolist() == list(range(7))  # all of unlabeled_X.bin, data.m1 ignored
    assert (splits.unlabeled_source.targets == -1).all()
    assert_same_images(splits.source.train, splits.labeled_indices[:20], written["train_x"])
    assert_same_images(splits.unlabeled_source, np.arange(7), written["unlabeled_x"])
    assert_same_images(splits.source.test, np.arange(4), written["test_x"])
    assert splits.source.train.targets.tolist() == written["train_y"].tolist()  # 1-based on disk


def test_smallimagenet127_batches(tmp_path: Path) -> None:
    root = tmp_path / "sin127"
    sizes = [60 - k // 3 for k in range(127)]  # a natural tail, 60 .. 18 images per class
    written = write_smallimagenet(root, sizes, [2] * 127)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"synset_{k}\n" for k in range(127)))
    record = ulfine_data(tmp_path, "smallimagenet127.yaml", f"data.root={root}", f"data.class_names={names}")
    assert record["class_names"] == [f"synset_{k}" for k in range(127)]
    labeled = [int(np.around(n / 10)) for n in sizes]
    assert record["labeled_counts"] == labeled and labeled[0] == 6 and labeled[-1] == 2
    assert record["unlabeled_counts"] == [n - l for n, l in zip(sizes, labeled)]
    assert record["test_counts"] == [2] * 127
    splits = build_splits(load_config(CONFIGS / "smallimagenet127.yaml", [f"data.root={root}"]).data)
    assert splits.class_names[:2] == ["class_0", "class_1"]  # the files carry no names
    assert splits.source.train.targets.tolist() == written["train_y"].tolist()  # 1-based on disk
    assert_same_images(splits.source.train, splits.labeled_indices[:10], written["train_x"])
    assert_same_images(splits.source.test, np.arange(4), written["test_x"])


def test_smallimagenet127_64px(tmp_path: Path) -> None:
    written = write_smallimagenet(tmp_path, [20, 10, 30], [1, 1, 1], side=64)
    splits = build_splits(load_config(CONFIGS / "smallimagenet127.yaml", [f"data.root={tmp_path}"]).data)
    assert splits.source.train.load(0).size == (64, 64)
    assert_same_images(splits.source.train, np.arange(3), written["train_x"])


def test_real_md5_check_stays_in_force(tmp_path: Path) -> None:
    """Without the test's bypass, torchvision rejects the miniature files: ulfine does not skip the check."""
    write_cifar10(tmp_path, [1] * 10, [1] * 10)
    with pytest.raises(DatasetError, match="CIFAR10 not found"):
        build_splits(load_config(None, ["data.dataset=cifar10", f"data.root={tmp_path}"]).data)


@pytest.mark.parametrize("method", ["ulfine", "acr"])
def test_stl10_unlabeled_binary_trains(method: str, tmp_path: Path, tiny_clip_dir: Path, skip_md5: None) -> None:
    """unlabeled_X.bin as the unlabeled set (hidden labels unknown, -1) through a short run:
    the methods estimate its distribution, the diagnostics skip the unknown labels."""
    from ulfine.engine.trainer import Trainer

    write_stl10(tmp_path / "stl10", [6] * 10, [1] * 10, unlabeled=8)
    cfg = load_config(CONFIGS / "stl10_lt.yaml", [
        f"model.name=local-dir:{tiny_clip_dir}", f"data.root={tmp_path / 'stl10'}", "data.download=false",
        "data.n1=4", "data.gamma_l=4", "data.batch_size=4", "data.uratio=2", "data.num_workers=0",
        "optim.iterations=2", "optim.warmup_iterations=1", "train.precision=fp32", "train.device=cpu",
        "train.eval_every=1", "train.log_every=1", "method.threshold=0.1",
        *(["method.acr.est_every=1"] if method == "acr" else []), "strategy.adapter_dim=4", f"method.name={method}", f"output.dir={tmp_path / 'runs'}",
        "output.tensorboard=false",
    ])
    trainer = Trainer(cfg)
    assert len(trainer.data.unlabeled) == 8 and trainer.data.unlabeled_counts is None
    result = trainer.fit()
    assert result["iterations"] == 2 and result["unlabeled_counts"] is None
    assert np.isfinite(result["top1"])
