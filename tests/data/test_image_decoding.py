"""Images decoded as photo tools show them: high bit depths scaled, EXIF orientation applied,
oversized images and odd folder entries (symlink loops, FIFOs) handled like bad images."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ulfine.api import _ImageFiles
from ulfine.data.sources import BadImageError, FileSource, as_rgb, open_image, scan_class_folders
from ulfine.data.views import Views


def gray(path: Path) -> np.ndarray:
    """The first channel of the image as ulfine loads it."""
    return np.asarray(open_image(path))[..., 0]


def test_16_bit_png_is_scaled_by_its_type_range(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")  # I;16 (convert("RGB") made it all white)
    assert gray(tmp_path / "a.png").tolist() == [[0, 1, 128, 255]]


def test_32_bit_int_tiff_uses_the_smallest_range_holding_it(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 1000, 30000, 65535]], dtype=np.int32)).save(tmp_path / "a.tif")
    assert gray(tmp_path / "a.tif").tolist() == [[0, 4, 117, 255]]
    Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32)).save(tmp_path / "b.tif")
    assert gray(tmp_path / "b.tif").tolist() == [[0, 100, 255]]


def test_float_tiff_in_0_1_and_outside(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "a.tif")
    assert gray(tmp_path / "a.tif").tolist() == [[0, 128, 255]]  # was all black
    Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32)).save(tmp_path / "b.tif")
    assert gray(tmp_path / "b.tif").tolist() == [[0, 128, 255]]  # its own range


def test_exif_orientation_is_applied_in_training_and_predict_alike(tmp_path: Path) -> None:
    image = Image.new("RGB", (4, 2), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "a.jpg", exif=exif)
    assert open_image(tmp_path / "a.jpg").size == (2, 4)
    assert FileSource([str(tmp_path / "a.jpg")], np.array([0])).load(0).size == (2, 4)
    with Image.open(tmp_path / "a.jpg") as opened:  # Predictor.predict on a PIL image
        assert as_rgb(opened).size == (2, 4)


def test_oversized_images_are_bad_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(BadImageError, match=r"has 100 x 100 = 10000 pixels, above data.max_image_pixels = 5000"):
        open_image(tmp_path / "big.png", max_pixels=5000)
    assert open_image(tmp_path / "big.png", max_pixels=None).size == (100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own DecompressionBombError
    with pytest.raises(BadImageError, match="big.png' is too large"):
        open_image(tmp_path / "big.png", max_pixels=1000)


def test_oversized_image_is_skipped_in_training_and_an_error_row_in_predict(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    source = FileSource([str(tmp_path / "big.png"), str(tmp_path / "small.png")], np.array([0, 1]), 5000)
    views = Views(source, [0, 1], {"image": lambda im: im.size}, bad_images="skip")
    assert views[0]["image"] == (10, 10)
    files = _ImageFiles(source.paths, lambda im: im.size, max_pixels=5000)
    assert files[0][1] is None and "above data.max_image_pixels" in files[0][2]
    assert files[1][1] == (10, 10)


def _class_folder(root: Path) -> Path:
    folder = root / "test" / "cat"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (4, 4)).save(folder / f"{i}.png")
    return folder


def test_symlink_loop_counts_each_image_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _class_folder(tmp_path)
    (folder / "loop").symlink_to(folder)
    with caplog.at_level(logging.WARNING):
        _, source = scan_class_folders(tmp_path / "test", "skip")
    assert len(source) == 3  # was 3 x 41 (followed until ELOOP)
    assert "loop (a link to a folder already listed: a symlink loop or a duplicate)" in caplog.text
    with pytest.raises(BadImageError, match="symlink loop"):
        scan_class_folders(tmp_path / "test", "error")


def test_fifo_is_not_listed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _class_folder(tmp_path)
    os.mkfifo(folder / "pipe.png")  # opening it would block training forever
    with caplog.at_level(logging.WARNING):
        _, source = scan_class_folders(tmp_path / "test", "skip")
    assert len(source) == 3 and "pipe.png (not a regular file: a FIFO, socket or device)" in caplog.text
    with pytest.raises(BadImageError, match="pipe.png .not a regular file"):
        scan_class_folders(tmp_path / "test", "error")
