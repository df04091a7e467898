"""Miniature files in each dataset's real on-disk format, written from the format descriptions
(not from ulfine's or torchvision's readers), with the real class names in the real order.

- CIFAR-10 ``cifar-10-batches-py/``: data_batch_1..5, test_batch: pickled dicts with
  'data' uint8 [n, 3072] (R, G, B planes of 32x32, row-major), 'labels' list of 0..9 ints,
  'batch_label', 'filenames'; batches.meta: 'label_names', 'num_cases_per_batch', 'num_vis'.
- CIFAR-100 ``cifar-100-python/``: train, test: 'data', 'fine_labels', 'coarse_labels',
  'filenames', 'batch_label'; meta: 'fine_label_names', 'coarse_label_names'.
- STL-10 ``stl10_binary/``: {train,test,unlabeled}_X.bin raw uint8, per image 3 planes of
  96x96 stored column-major; {train,test}_y.bin uint8 labels 1..10; class_names.txt,
  fold_indices.txt (10 lines of space-separated train indices).
- Small-ImageNet-127 (downsampled-ImageNet batches): train_data_batch_1..10, val_data:
  pickled dicts with 'data' uint8 [n, 3*S*S] (R, G, B planes, row-major), 'labels' list of
  1..127 ints, 'mean' (train batches).

The real CIFAR pickles were written by Python 2 with str keys; loaded with ``encoding='latin1'``
(as torchvision does) they give str keys, which is what these Python 3 pickles give too.
torchvision verifies md5 sums of the real files; tests bypass that check with `skip_md5`.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid
otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray
road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm
""".split()
CIFAR100_COARSE = """
aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
household_furniture insects large_carnivores large_man-made_outdoor_things
large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals
non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2
""".split()
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
assert len(CIFAR100_CLASSES) == 100 and len(CIFAR100_COARSE) == 20


def images(n: int, side: int, seed: int) -> np.ndarray:
    """[n, side, side, 3] uint8 random images (HWC, the layout every reader must return)."""
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def planes_row_major(x: np.ndarray) -> np.ndarray:
    """HWC images -> rows of R, G, B planes, each row-major (CIFAR, downsampled ImageNet)."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1)


def planes_column_major(x: np.ndarray) -> np.ndarray:
    """HWC images -> rows of R, G, B planes, each column-major (STL-10's binary files)."""
    return np.ascontiguousarray(x.transpose(0, 3, 2, 1)).reshape(len(x), -1)


def dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def labels_for(per_class: list[int], seed: int, base: int = 0) -> np.ndarray:
    """Labels with ``per_class[k]`` copies of ``k + base``, shuffled (classes interleaved as in the files)."""
    labels = np.repeat(np.arange(len(per_class)) + base, per_class)
    return np.random.default_rng(seed).permutation(labels)


def write_cifar10(root: Path, train_per_class: list[int], test_per_class: list[int]) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py``; the train images are spread over the 5 batches in order.
    Returns the images and labels written ({'train_x', 'train_y', 'test_x', 'test_y'})."""
    folder = root / "cifar-10-batches-py"
    train_y, test_y = labels_for(train_per_class, 1), labels_for(test_per_class, 2)
    train_x, test_x = images(len(train_y), 32, 3), images(len(test_y), 32, 4)
    for b, part in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        dump(folder / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5", "labels": train_y[part].tolist(),
            "data": planes_row_major(train_x[part]), "filenames": [f"img_{i}.png" for i in part]})
    dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y.tolist(),
                                 "data": planes_row_major(test_x),
                                 "filenames": [f"t_{i}.png" for i in range(len(test_y))]})
    dump(folder / "batches.meta", {"num_cases_per_batch": 10000, "label_names": CIFAR10_CLASSES, "num_vis": 3072})
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def write_cifar100(root: Path, train_per_class: list[int], test_per_class: list[int]) -> dict[str, np.ndarray]:
    """``root/cifar-100-python`` (train, test, meta)."""
    folder = root / "cifar-100-python"
    out = {}
    for split, per_class, seed in (("train", train_per_class, 5), ("test", test_per_class, 6)):
        fine = labels_for(per_class, seed)
        x = images(len(fine), 32, seed + 10)
        dump(folder / split, {"filenames": [f"{split}_{i}.png" for i in range(len(fine))], "batch_label": split,
                              "fine_labels": fine.tolist(), "coarse_labels": (fine % 20).tolist(),
                              "data": planes_row_major(x)})
        out[f"{split}_x"], out[f"{split}_y"] = x, fine
    dump(folder / "meta", {"fine_label_names": CIFAR100_CLASSES, "coarse_label_names": CIFAR100_COARSE})
    return out


def write_stl10(
    root: Path, train_per_class: list[int], test_per_class: list[int], unlabeled: int
) -> dict[str, np.ndarray]:
    """``root/stl10_binary`` with ``unlabeled`` images in unlabeled_X.bin."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, per_class, seed in (("train", train_per_class, 7), ("test", test_per_class, 8)):
        y = labels_for(per_class, seed, base=1)  # 1..10 on disk
        x = images(len(y), 96, seed + 10)
        planes_column_major(x).tofile(folder / f"{split}_X.bin")
        y.astype(np.uint8).tofile(folder / f"{split}_y.bin")
        out[f"{split}_x"], out[f"{split}_y"] = x, y - 1
    out["unlabeled_x"] = images(unlabeled, 96, 9)
    planes_column_major(out["unlabeled_x"]).tofile(folder / "unlabeled_X.bin")
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    n_train = len(out["train_y"])
    folds = [" ".join(str(i) for i in range(k % n_train, n_train, 10)) for k in range(10)]
    (folder / "fold_indices.txt").write_text("\n".join(folds) + "\n")
    return out


def write_smallimagenet(root: Path, train_per_class: list[int], test_per_class: list[int],
                        side: int = 32) -> dict[str, np.ndarray]:
    """``root/train_data_batch_1..10`` and ``root/val_data`` (downsampled-ImageNet pickles)."""
    root.mkdir(parents=True, exist_ok=True)
    train_y, test_y = labels_for(train_per_class, 11, base=1), labels_for(test_per_class, 12, base=1)
    train_x, test_x = images(len(train_y), side, 13), images(len(test_y), side, 14)
    rows = planes_row_major(train_x)
    for b, part in enumerate(np.array_split(np.arange(len(train_y)), 10), start=1):
        dump(root / f"train_data_batch_{b}", {"data": rows[part], "labels": train_y[part].tolist(),
                                              "mean": rows.mean(0)})
    dump(root / "val_data", {"data": planes_row_major(test_x), "labels": test_y.tolist()})
    return {"train_x": train_x, "train_y": train_y - 1, "test_x": test_x, "test_y": test_y - 1}


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept the miniature files in place of the real ones: torchvision's md5 check always passes.

    Only the tests patch this; ulfine itself calls torchvision unchanged."""
    from torchvision.datasets import cifar, stl10

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(stl10, "check_integrity", lambda *args, **kwargs: True)
