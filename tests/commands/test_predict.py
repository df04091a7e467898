"""`ulfine predict` and the Python API on a tiny finished run: CSV layout, bad files, accuracy."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ulfine.api import load_run, top_k_classes
from ulfine.cli import main
from ulfine.commands.predict import folder_accuracy, list_images


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_csv_columns_and_unreadable_file(tiny_run: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(images / "red.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")
    (images / "notes.txt").write_text("ignored: not an image file")
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--run", str(tiny_run), "--images", str(images), "--top-k", "2",
                 "--output", str(out), "--device", "cpu", "--workers", "0"]) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "predicted_class", "probability", "top2_class", "top2_prob", "error"]
    assert [Path(r["path"]).name for r in rows] == ["broken.jpg", "red.png"]
    broken, red = rows
    assert "broken.jpg" in broken["error"] and broken["predicted_class"] == ""
    assert red["error"] == "" and red["predicted_class"] in {"cat", "dog", "ship"}
    assert red["top2_class"] not in {"", red["predicted_class"]}
    assert 1.0 >= float(red["probability"]) >= float(red["top2_prob"]) > 0.0


def test_predict_matches_run_top1(tiny_run: Path) -> None:
    """Predicting the test folder file by file reproduces the run's reported top-1."""
    predictor = load_run(tiny_run)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    test_dir = Path(predictor.cfg.data.root) / "test"
    predictions = predictor.predict_files(list_images([test_dir]), batch_size=5, top_k=1, progress=False)
    assert folder_accuracy(predictions, predictor.class_names) == pytest.approx(metrics["top1"])


def test_predict_accepts_pil_images_and_tensors(tiny_run: Path) -> None:
    predictor = load_run(tiny_run)
    images = [Image.new("RGB", (32, 32), (k * 80, 50, 50)) for k in range(3)]
    probs = predictor.predict(images)
    assert probs.shape == (3, len(predictor.class_names))
    assert torch.allclose(probs.sum(dim=-1), torch.ones(3))
    batch = torch.stack([predictor.transform(image) for image in images])
    assert torch.equal(predictor.predict(batch), probs)


def test_predict_accepts_paths(tiny_run: Path, tmp_path: Path) -> None:
    predictor = load_run(tiny_run)
    image = Image.new("RGB", (32, 32), (80, 50, 50))
    image.save(tmp_path / "a.png")
    probs = predictor.predict([str(tmp_path / "a.png"), tmp_path / "a.png", image])
    assert torch.equal(probs[0], probs[1]) and torch.equal(probs[0], probs[2])
    (tmp_path / "bad.jpg").write_bytes(b"no image")
    with pytest.raises(ValueError, match="bad.jpg"):
        predictor.predict([str(tmp_path / "bad.jpg")])


def test_folder_accuracy_needs_class_folders(tmp_path: Path) -> None:
    from ulfine.api import FilePrediction

    inside = [FilePrediction("x/cat/1.png", ["cat"], [0.9]), FilePrediction("x/dog/2.png", ["cat"], [0.6])]
    assert folder_accuracy(inside, ["cat", "dog"]) == 50.0
    assert folder_accuracy([FilePrediction("x/misc/1.png", ["cat"], [0.9])], ["cat", "dog"]) is None


def test_missing_input_names_it(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--run", str(tiny_run), "--images", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err



def test_ties_go_to_the_lower_class_index() -> None:
    """As argmax does, so the CSV agrees with the run's accuracy when bf16 logits tie
    (``topk`` orders these ten ties 5, 9, 8, ...)."""
    probs = torch.softmax(torch.tensor([[0.0] * 10, [0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]]), dim=-1)
    values, indices = top_k_classes(probs, 3)
    assert indices.tolist() == [[0, 1, 2], [1, 2, 9]]
    assert torch.equal(indices[:, 0], probs.argmax(dim=-1))
    assert torch.equal(values, probs.gather(1, indices))
