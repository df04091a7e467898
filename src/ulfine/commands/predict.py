"""`ulfine predict --run RUN --images DIR_OR_FILES`: class predictions of image files as CSV.

Folders are searched recursively for image files (sorted); files named explicitly are always
tried. The CSV has one row per file, readable in a spreadsheet:
``path, predicted_class, probability, top2_class, top2_prob, ..., topK_class, topK_prob, error``.
A file that cannot be read gets an empty prediction and the reason in ``error``.
When every image sits in a folder named after a class (``test/<class>/x.jpg``), the top-1
accuracy against those folder names is printed as well.
"""
from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Sequence

from ulfine.api import FilePrediction, load_run
from ulfine.data.sources import is_image_file, list_files
from ulfine.errors import MissingFileError, UsageError

logger = logging.getLogger(__name__)


def list_images(inputs: Sequence[str | Path]) -> list[str]:
    """Explicit files as given, plus the image files under each folder (recursive, sorted)."""
    paths: list[str] = []
    for item in map(Path, inputs):
        if item.is_file():
            paths.append(str(item))
        elif item.is_dir():
            paths.extend(_images_under(item))
        else:
            raise MissingFileError(f"--images: '{item}' is neither a file nor a folder")
    if not paths:
        raise MissingFileError(f"--images: no image files found in {', '.join(map(str, inputs))}")
    return paths


def _images_under(folder: Path) -> list[str]:
    files, unusable = list_files(folder)
    found = [path for path in files if is_image_file(path)]
    if len(found) < len(files):
        logger.info("skipped %d non-image file(s) under '%s'", len(files) - len(found), folder)
    for entry in unusable:
        logger.warning("skipped %s", entry)
    return sorted(found)


def csv_header(top_k: int) -> list[str]:
    ranks = [col for k in range(2, top_k + 1) for col in (f"top{k}_class", f"top{k}_prob")]
    return ["path", "predicted_class", "probability", *ranks, "error"]


def csv_row(prediction: FilePrediction, top_k: int) -> list[str]:
    cells = [prediction.path]
    for k in range(top_k):
        known = k < len(prediction.classes)
        cells += [prediction.classes[k] if known else "", f"{prediction.probs[k]:.6f}" if known else ""]
    return [*cells, prediction.error or ""]


def write_csv(predictions: list[FilePrediction], top_k: int, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_header(top_k))
        writer.writerows(csv_row(p, top_k) for p in predictions)


def folder_accuracy(predictions: list[FilePrediction], class_names: list[str]) -> float | None:
    """Top-1 (percent) against each file's parent folder name when all readable files sit in
    class-named folders ('_' read as a space); None otherwise."""
    names = set(class_names)
    readable = [p for p in predictions if p.error is None]
    truths = [Path(p.path).parent.name for p in readable]
    truths = [t if t in names else t.replace("_", " ") for t in truths]
    if not readable or any(t not in names for t in truths):
        return None
    hits = sum(p.classes[0] == t for p, t in zip(readable, truths))
    return 100.0 * hits / len(readable)


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if Path(args.output).is_dir():
        raise UsageError(f"--output '{args.output}' is a folder; give a file name, "
                         f"e.g. {Path(args.output) / 'predictions.csv'}")
    paths = list_images(args.images)
    predictor = load_run(args.run, device=args.device, model_name=args.model)
    top_k = min(args.top_k, len(predictor.class_names))
    predictions = predictor.predict_files(paths, batch_size=args.batch_size, top_k=top_k,
                                          num_workers=args.workers)
    write_csv(predictions, top_k, args.output)
    errors = sum(p.error is not None for p in predictions)
    print(f"wrote {args.output}: {len(predictions)} images, {errors} unreadable")
    accuracy = folder_accuracy(predictions, predictor.class_names)
    if accuracy is not None:
        print(f"top-1 against the class folder names: {accuracy:.2f}% ({len(predictions) - errors} images)")
    return 0
