"""Image sources: labels plus a way to load image i, without opening files up front.

Two kinds cover every dataset: `ArraySource` (decoded uint8 arrays: torchvision CIFAR/STL,
Small-ImageNet pickles) and `FileSource` (image files: ImageFolder trees). Both load an RGB
PIL image by index and describe an index for error messages (the file path where there is one).

Every image file ulfine reads (training, evaluation, the feature cache, ``predict``) goes
through `open_image`: EXIF orientation applied, high-bit-depth pixels scaled to 8 bits (see
`to_rgb`), images above ``data.max_image_pixels`` refused like any other bad image. Folders are
listed by `list_files`: symlinks are followed but each real folder is entered once (a symlink
loop is reported, never walked 40 times), and only regular files are listed (a FIFO would hang).
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from ulfine.errors import UlfineError

logger = logging.getLogger(__name__)

BadImagePolicy = Literal["error", "skip"]


class DatasetError(UlfineError, ValueError):
    """Dataset files that are missing, malformed or inconsistent; the message names them."""


class BadImageError(DatasetError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own default limit (1024 * 1024 * 1024 // 4 // 3)
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. Pillow's ``convert("RGB")`` clips 16/32-bit and float pixels to
    0..255, so a 16-bit photo comes out white and a float one in [0, 1] black; they are scaled
    instead, by a range that keeps a dark image dark (no per-image stretch where a range is known):

    - 16-bit modes (I;16*): the type's range 0..65535, as photo editors convert 16 to 8 bits;
    - 32-bit int (I): the smallest unsigned range of 8, 16 or 32 bits that holds its values
      (Pillow also reads 16-bit PNGs and TIFFs as I, where 0..2^32 would make them black);
    - float (F): 0..1 when its values lie there (the float-image convention);
    - otherwise (negative values, floats outside [0, 1]) the image's own min..max, the only
      range such data defines."""
    if image.mode not in _HIGH_BIT_MODES:
        return image.convert("RGB")
    values = np.asarray(image).astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    elif image.mode == "I" and low >= 0:
        low, high = 0.0, next(r for r in (255.0, 65535.0, 4294967295.0) if high <= r)
    elif image.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low) if high > low else 0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")


def as_rgb(image: Image.Image) -> Image.Image:
    """An opened image as photo tools show it: EXIF orientation applied, then 8-bit RGB."""
    return to_rgb(ImageOps.exif_transpose(image))


def open_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``path`` fully (so truncation shows here) with `as_rgb`; `BadImageError` naming
    the file for anything unreadable, including images above ``max_pixels`` (None: no limit)."""
    if max_pixels is None or max_pixels > (Image.MAX_IMAGE_PIXELS or float("inf")):
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own refusal must not undercut a raised limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is ours
            with Image.open(path) as img:
                width, height = img.size
                if max_pixels is not None and width * height > max_pixels:
                    raise BadImageError(
                        f"image '{path}' has {width} x {height} = {width * height} pixels, above "
                        f"data.max_image_pixels = {max_pixels} (raise it to read such images)"
                    )
                return as_rgb(img)
    except Image.DecompressionBombError as err:
        raise BadImageError(f"image '{path}' is too large: {err} (data.max_image_pixels = {max_pixels}; "
                            "raise it to read such images)") from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        if isinstance(err, BadImageError):
            raise
        raise BadImageError(f"cannot read image '{path}': {err}") from err


class ImageSource:
    """Labels ``targets`` [N] (int64, -1 where unknown) and RGB images by index."""

    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        raise NotImplementedError

    def fingerprint(self, indices: list[int], content: bool = False) -> str:
        """A digest that changes when any of these images changes (feature-cache keys)."""
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

    def fingerprint(self, indices: list[int], content: bool = False) -> str:
        """The pixels themselves: hashing arrays in memory is cheap next to encoding them."""
        digest = hashlib.sha256(str(self.data.shape[1:]).encode())
        for index in indices:
            digest.update(np.ascontiguousarray(self.data[index]).tobytes())
        return digest.hexdigest()


class FileSource(ImageSource):
    """Image files ``paths`` [N] with labels; decoding errors raise `BadImageError` naming the file."""

    def __init__(self, paths: list[str], targets: np.ndarray,
                 max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.paths = paths
        self.targets = np.asarray(targets, dtype=np.int64)
        self.max_pixels = max_pixels

    def load(self, index: int) -> Image.Image:
        return open_image(self.paths[index], self.max_pixels)

    def describe(self, index: int) -> str:
        return self.paths[index]

    def fingerprint(self, indices: list[int], content: bool = False) -> str:
        """Each file's path, size and mtime (ns), or with ``content`` its bytes: any rewrite of
        an image changes it (a copy that keeps the mtime and size needs ``content``)."""
        digest = hashlib.sha256()
        for index in indices:
            path = self.paths[index]
            digest.update(path.encode() + b"\0")
            if content:
                with open(path, "rb") as handle:
                    digest.update(hashlib.file_digest(handle, "sha256").digest())
            else:
                stat = os.stat(path)
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}\0".encode())
        return digest.hexdigest()


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


def _report_unusable(unusable: list[str], where: Path, policy: BadImagePolicy) -> None:
    """Entries that are no regular file or a folder listed before: an error, or (skip) a warning."""
    if not unusable:
        return
    shown = "; ".join(unusable[:5]) + (" ..." if len(unusable) > 5 else "")
    what = f"{len(unusable)} unusable folder entr{'y' if len(unusable) == 1 else 'ies'} under '{where}'"
    if policy == "error":
        raise BadImageError(f"{what}: {shown} (remove them, or data.bad_images=skip ignores them)")
    logger.warning("skipped %s: %s", what, shown)


def list_files(folder: str | Path) -> tuple[list[str], list[str]]:
    """(regular files under ``folder``, recursively; unusable entries as 'path (why)').

    Order: by folder path, then file name (as ``sorted(os.walk(...))``, which fixes which
    images the protocol takes first). Hidden names are ignored; symlinks are followed, but a
    folder reached again (a symlink loop, or a second link to it) is not entered twice."""
    by_folder: dict[str, list[str]] = {}
    unusable: list[str] = []
    seen: set[tuple[int, int]] = set()

    def walk(path: str) -> None:
        stat = os.stat(path)
        if (stat.st_dev, stat.st_ino) in seen:
            unusable.append(f"{path} (a link to a folder already listed: a symlink loop or a duplicate)")
            return
        seen.add((stat.st_dev, stat.st_ino))
        files = by_folder.setdefault(path, [])
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        walk(entry.path)
                    elif entry.is_file():
                        files.append(entry.name)
                    elif entry.is_symlink() and not os.path.exists(entry.path):
                        unusable.append(f"{entry.path} (a broken symlink)")
                    else:
                        unusable.append(f"{entry.path} (not a regular file: a FIFO, socket or device)")
                except OSError as err:
                    unusable.append(f"{entry.path} ({err.strerror or err})")

    walk(os.fspath(folder))
    paths = [os.path.join(d, name) for d in sorted(by_folder) for name in sorted(by_folder[d])]
    return paths, unusable


def scan_class_folders(split_dir: Path, policy: BadImagePolicy,
                       max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[list[str], FileSource]:
    """``split_dir/<class>/*`` -> (sorted class names, files sorted within each class).

    Files are listed, never opened (50k files scan in well under a second). Hidden files
    (``.DS_Store``) are ignored; an empty class folder is an error naming it."""
    if not split_dir.is_dir():
        raise DatasetError(f"folder '{split_dir}' does not exist (expected <root>/{split_dir.name}/<class>/*)")
    class_names, class_to_idx = find_classes(split_dir)
    paths: list[str] = []
    targets: list[int] = []
    rejected: list[str] = []
    unusable: list[str] = []
    for name in class_names:
        files, bad = list_files(split_dir / name)
        unusable += bad
        for path in files:
            if is_image_file(path):
                paths.append(path)
                targets.append(class_to_idx[name])
            else:
                rejected.append(path)
    _report_unusable(unusable, split_dir, policy)
    _report_non_images(rejected, split_dir, policy)
    target_array = np.array(targets, dtype=np.int64)
    empty = [name for k, name in enumerate(class_names) if not np.any(target_array == k)]
    if empty:
        raise DatasetError(f"class folder(s) with no images under '{split_dir}': {', '.join(empty)}")
    return class_names, FileSource(paths, target_array, max_pixels)


def scan_unlabeled_folder(folder: Path, policy: BadImagePolicy,
                          max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> FileSource:
    """Every image file under ``folder`` (recursively, sorted); labels unknown (-1)."""
    files, unusable = list_files(folder)
    paths = [p for p in files if is_image_file(p)]
    _report_unusable(unusable, folder, policy)
    _report_non_images([p for p in files if not is_image_file(p)], folder, policy)
    if not paths:
        raise DatasetError(f"unlabeled folder '{folder}' holds no images")
    return FileSource(paths, np.full(len(paths), -1, dtype=np.int64), max_pixels)
