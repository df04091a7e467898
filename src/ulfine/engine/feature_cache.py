"""Frozen-encoder feature cache: encode every image's views once, then train heads on the cache.

When the encoder is frozen (strategy lp), a training step only needs the features z of its
views. `ensure_cache` encodes a bank of ``train.feature_bank`` (K) augmentations of each image:
K weak views of each labeled image, K weak and K strong views of each unlabeled image (none for a
method that never reads the unlabeled split, e.g. ``supervised``), and the single eval view of
each val/test image. They are stored as memory-mapped ``.npy`` arrays
``[N, K, D]`` (float16; z is unit-norm) in ``<cache_dir>/<dataset>-<key digest>/``, next to a
``key.json`` that records everything the features depend on (model weights hash, model name,
preprocessing, the data fields that pick or change images, the transforms, K, seed, precision,
the sample indices, and a fingerprint of every image: each file's size and mtime, or with
``train.cache_fingerprint=content`` its bytes). A key that differs from the stored one rebuilds
the cache and logs why; nothing is reused unless the key matches exactly.

A build works in a locked ``*.tmp-*`` folder and records, after every batch, how many images of
each split are on disk (``progress.json``, with the key). A build that is killed or fails keeps
that folder, and the next build of the same key resumes it at the last recorded batch: encoding
a large unlabeled split can take hours, and a killed run loses at most one batch. The resumed
arrays equal a straight build's, since each image's views are seeded by its position and the
batches are the same. A partial build of another key is kept for its own resume (logged, with its
size); a ``*.tmp-*`` folder without a progress record (an older layout) is deleted.
The eval splits (val, test: one deterministic view) do not depend on the seed, the bank or the
training splits, so a build links them from a finished cache beside it whose key agrees on
everything they depend on (`split_key`): a sweep over seeds encodes the 10k test images once.

`feature_data` then swaps the run's datasets for `FeatureViews`, whose items have the layout of
`ulfine.data.views.Views` items with features [D] in place of images; the trainer's streams,
resume state and evaluation run unchanged, and `Learner` passes [B, D] inputs straight to the
method. A stream item ``(position, seed)`` takes bank entry ``seed % K`` for the first view and
``(seed // K) % K`` for the second, so weak and strong augmentations are drawn independently and
reproducibly (the sample seed comes from the stream position, see `ulfine.data.stream`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ulfine.config import RunConfig, to_dict
from ulfine.data import LTSSLData
from ulfine.data.stream import sample_seed
from ulfine.data.views import Views
from ulfine.engine.amp import autocast
from ulfine.engine.runlock import FolderBusyError, FolderLock, is_locked
from ulfine.models.foundation import Foundation
from ulfine.runfolder import feature_cache_dir

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the folder layout changes
STORE_DTYPE = np.float16
_LOADER_ONLY = ("batch_size", "uratio", "eval_batch_size", "num_workers")  # do not change any image
# data fields added after CACHE_FORMAT 1, left out of the key at the value that reproduces the
# earlier behaviour, so caches built before they existed stay valid (what they select is pinned
# by the split's indices anyway)
_ADDED_LATER = {"val_source": "labeled", "oracle_labels": False}
_SPLITS = ("labeled", "unlabeled", "val", "test")
_EVAL_SPLITS = ("val", "test")  # one deterministic view each: shareable between caches
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class FeatureCache:
    folder: Path
    built: bool  # True when this call (re)built it, False when an existing cache was reused


def _splits(data: LTSSLData, unlabeled: bool = True) -> dict[str, Views]:
    """The splits to cache; without ``unlabeled`` (a method that never reads it) not that one."""
    names = _SPLITS if unlabeled else tuple(name for name in _SPLITS if name != "unlabeled")
    return {name: getattr(data, name) for name in names if getattr(data, name) is not None}


def _bank_size(split: str, cfg: RunConfig) -> int:
    """K augmentations for the training splits; the eval view is deterministic, so one."""
    return cfg.train.feature_bank if split in ("labeled", "unlabeled") else 1


def _digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def cache_key(cfg: RunConfig, foundation: Foundation, data: LTSSLData, unlabeled: bool = True) -> dict[str, Any]:
    """Everything the cached features depend on, as JSON-ready values."""
    splits = _splits(data, unlabeled)
    key = {
        "format": CACHE_FORMAT,
        "model": cfg.model.name,
        "checkpoint": cfg.model.checkpoint,
        "weights": foundation.weights_hash(),
        "preprocess": foundation.preprocess_cfg,
        "data": {k: v for k, v in to_dict(cfg.data).items()
                 if k not in _LOADER_ONLY and not (k in _ADDED_LATER and v == _ADDED_LATER[k])},
        "transforms": {
            f"{split}.{view}": _ADDRESS.sub("", repr(transform))
            for split, views in splits.items() for view, transform in views.transforms.items()
        },
        "bank": cfg.train.feature_bank,
        "seed": cfg.train.seed,
        "precision": cfg.train.precision,
        "indices": {split: _digest(views.indices) for split, views in splits.items()},
        "images": {split: views.source.fingerprint(views.indices, cfg.train.cache_fingerprint == "content")
                   for split, views in splits.items()},
    }
    return json.loads(json.dumps(key))  # tuples -> lists, as they come back from key.json


def split_key(key: dict[str, Any], split: str) -> dict[str, Any]:
    """The part of a cache key that an eval split's features depend on: the model, its weights
    and preprocessing, the precision, the split's transform, its indices and its images."""
    return {
        **{name: key.get(name) for name in ("format", "model", "checkpoint", "weights", "preprocess", "precision")},
        "transforms": {view: t for view, t in key.get("transforms", {}).items() if view.startswith(f"{split}.")},
        "indices": key.get("indices", {}).get(split),
        "images": key.get("images", {}).get(split),
    }


def _split_files(folder: Path, split: str) -> list[Path]:
    return sorted(folder.glob(f"{split}.*.npy"))


def _link_split(root: Path, key: dict[str, Any], split: str, tmp: Path) -> Path | None:
    """Hard-link (or copy) ``split``'s arrays from a finished cache under ``root`` with the same
    `split_key` into ``tmp``; the source folder, or None when there is none."""
    wanted = split_key(key, split)
    for key_file in sorted(root.glob("*/key.json")):
        source = key_file.parent
        if ".tmp-" in source.name or source == tmp:
            continue
        try:
            files = _split_files(source, split)
            if not files or split_key(json.loads(key_file.read_text()), split) != wanted:
                continue
            for path in files:
                try:
                    os.link(path, tmp / path.name)
                except OSError:  # another file system, or links not supported
                    shutil.copy2(path, tmp / path.name)
            return source
        except (OSError, ValueError):  # a folder replaced or half-written meanwhile: try the next
            for path in _split_files(tmp, split):
                path.unlink()
    return None


def cache_root(cfg: RunConfig) -> Path:
    return Path(cfg.train.cache_dir) if cfg.train.cache_dir else feature_cache_dir(cfg.output.dir)


def _stale_reason(folder: Path, key: dict[str, Any]) -> str | None:
    """None when ``folder`` holds a complete cache for ``key``, else why it must be (re)built."""
    path = folder / "key.json"
    if not path.is_file():
        return "no cache yet"
    stored = json.loads(path.read_text())
    changed = sorted(k for k in key.keys() | stored.keys() if key.get(k) != stored.get(k))
    return f"key differs in {changed}" if changed else None


class _BankViews(Dataset):
    """Item i: K transformed copies of each view of image i, [K, 3, H, W], seeded per copy."""

    def __init__(self, views: Views, bank: int, seed: int) -> None:
        self.views = views
        self.bank = bank
        self.seed = seed

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, position: int) -> dict[str, Any]:
        copies = [self.views[(position, sample_seed(self.seed, position * self.bank + k))] for k in range(self.bank)]
        item = {name: torch.stack([c[name] for c in copies]) for name in self.views.transforms}
        item["label"], item["index"] = copies[0]["label"], copies[0]["index"]
        return item


PROGRESS = "progress.json"  # in a build's temp folder: its key and the images encoded per split


def _read_progress(tmp: Path) -> dict[str, Any] | None:
    try:
        progress = json.loads((tmp / PROGRESS).read_text())
    except (OSError, ValueError):
        return None
    return progress if isinstance(progress, dict) and isinstance(progress.get("rows"), dict) else None


def _write_progress(tmp: Path, key: dict[str, Any], rows: dict[str, int]) -> None:
    """Atomically, so a kill leaves the previous record or this one, never half of one."""
    part = tmp / f"{PROGRESS}.part"
    part.write_text(json.dumps({"key": key, "rows": rows}))
    os.replace(part, tmp / PROGRESS)


def _open_array(path: Path, shape: tuple[int, ...], dtype: Any, resume: bool) -> np.ndarray:
    """A writable memory map of ``path``: the interrupted build's array when resuming, else new."""
    if resume:
        return np.load(path, mmap_mode="r+")
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _can_resume(tmp: Path, split: str, views: Views, bank: int) -> bool:
    """Whether every array of ``split`` an interrupted build recorded is there, with its shape."""
    try:
        arrays = [np.load(tmp / f"{split}.{name}.npy", mmap_mode="r") for name in (*views.transforms, "label", "index")]
    except (OSError, ValueError):
        return False
    *features, labels, indices = arrays
    return (all(a.shape[:2] == (len(views), bank) and a.dtype == STORE_DTYPE for a in features)
            and labels.shape == indices.shape == (len(views),))


@torch.no_grad()
def _encode_split(encoder: nn.Module, views: Views, bank: int, tmp: Path, split: str, cfg: RunConfig,
                  device: torch.device, key: dict[str, Any], rows: dict[str, int]) -> None:
    """Writes ``<split>.<view>.npy`` [N, K, D] plus ``<split>.label.npy`` / ``<split>.index.npy``,
    starting at ``rows[split]`` (images already on disk) and recording ``rows`` after each batch."""
    batch_size = max(1, cfg.data.eval_batch_size // bank)
    start = rows.get(split, 0)
    start -= start % batch_size  # on a batch boundary: the same batches as a straight build
    if start and not _can_resume(tmp, split, views, bank):
        logger.warning("feature cache: the recorded arrays of %s in %s are missing or malformed; encoding %s "
                       "from the start", split, tmp, split)
        start = 0
    dataset = _BankViews(views, bank, seed=sample_seed(cfg.train.seed, _SPLITS.index(split)))
    loader = DataLoader(Subset(dataset, range(start, len(views))), batch_size=batch_size,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    resume = start > 0
    labels = _open_array(tmp / f"{split}.label.npy", (len(views),), np.int64, resume)
    indices = _open_array(tmp / f"{split}.index.npy", (len(views),), np.int64, resume)
    arrays: dict[str, np.ndarray] = {}
    for batch in tqdm(loader, desc=f"feature cache {split}", initial=start // batch_size,
                      total=-(-len(views) // batch_size), leave=False):
        count = len(batch["label"])
        for name in views.transforms:
            images = batch[name].flatten(0, 1).to(device, non_blocking=True)  # [b*K, 3, H, W]
            with autocast(device, cfg.train.precision):
                z = encoder(images).float().view(count, bank, -1).cpu().numpy()
            if name not in arrays:
                arrays[name] = _open_array(tmp / f"{split}.{name}.npy", (len(views), bank, z.shape[-1]),
                                           STORE_DTYPE, resume)
            arrays[name][start:start + count] = z
        labels[start:start + count], indices[start:start + count] = batch["label"], batch["index"]
        start += count
        for array in (*arrays.values(), labels, indices):
            array.flush()
        rows[split] = start
        _write_progress(tmp, key, rows)


def _done(rows: dict[str, int]) -> str:
    return ", ".join(f"{split} {count}" for split, count in rows.items()) or "nothing yet"


def _claim_partial_build(folder: Path, key: dict[str, Any]) -> tuple[Path, FolderLock, dict[str, int]] | None:
    """The temp folder (locked) of an interrupted build of this key and its images done per split, or None."""
    for tmp in sorted(folder.parent.glob(f"{folder.name}.tmp-*")):
        progress = _read_progress(tmp) if tmp.is_dir() else None
        if progress is None or progress.get("key") != key:
            continue
        try:
            lock = FolderLock(tmp, "feature cache build").acquire()
        except FolderBusyError:  # a live build holds it
            continue
        return tmp, lock, {split: int(count) for split, count in progress["rows"].items()}
    return None


def _build(folder: Path, key: dict[str, Any], cfg: RunConfig, encoder: nn.Module,
           data: LTSSLData, device: torch.device, unlabeled: bool) -> None:
    """Encode into a private folder, then move it into place (an interrupted build leaves no cache,
    only its temp folder, which the next build of this key resumes)."""
    claimed = _claim_partial_build(folder, key)
    if claimed is None:
        tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        lock = FolderLock(tmp, "feature cache build").acquire()  # marks it live for other builders
        rows: dict[str, int] = {}
        _write_progress(tmp, key, rows)
    else:
        tmp, lock, rows = claimed
        logger.info("feature cache: resuming the interrupted build %s (images done: %s)", tmp.name, _done(rows))
    _remove_stale_builds(folder.parent)
    was_training = encoder.training
    encoder.eval()
    finished = False
    try:
        for split, views in _splits(data, unlabeled).items():
            if rows.get(split) == len(views):
                continue
            if not rows.get(split):  # nothing of it recorded: start clean (a file there may be a link)
                for path in _split_files(tmp, split):
                    path.unlink()
            linkable = split in _EVAL_SPLITS and not rows.get(split)  # a half-encoded split resumes
            source = _link_split(folder.parent, key, split, tmp) if linkable else None
            if source is not None:
                logger.info("feature cache: %s taken from %s (same model, images and view)", split, source.name)
                rows[split] = len(views)
                _write_progress(tmp, key, rows)
                continue
            logger.info("feature cache: encoding %s (%d images x %d views%s)", split, len(views),
                        _bank_size(split, cfg), f", from image {rows[split]}" if rows.get(split) else "")
            _encode_split(encoder, views, _bank_size(split, cfg), tmp, split, cfg, device, key, rows)
        (tmp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
        finished = True
        if _stale_reason(folder, key) is None:  # another process (DDP rank) finished it first
            return
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        (folder / PROGRESS).unlink(missing_ok=True)
    except BaseException:
        if not finished:
            logger.warning("feature cache: build stopped; %s keeps what was encoded (%s), and the next run "
                           "with the same settings resumes it", tmp, _done(rows))
        raise
    finally:
        encoder.train(was_training)
        lock.release()
        if finished:
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_builds(root: Path) -> None:
    """Delete the ``*.tmp-*`` folders that no live build holds and no build can resume (no progress
    record); keep, and name, those that a build of their own key will resume."""
    for stale in sorted(root.glob("*.tmp-*")):
        if not stale.is_dir() or is_locked(stale):
            continue
        if _read_progress(stale) is None:
            shutil.rmtree(stale, ignore_errors=True)
            logger.info("feature cache: removed %s, left by an interrupted build", stale)
        else:
            size = sum(path.stat().st_size for path in stale.glob("*.npy")) / 2**20
            logger.info("feature cache: kept %s (%.0f MiB), an interrupted build of other settings that "
                        "resumes when they run again; delete it to free the space", stale, size)


def _wait_for_live_builds(folder: Path, poll_seconds: float) -> bool:
    """Wait while another process builds ``folder`` (a locked ``*.tmp-*`` of the same key) rather
    than encode everything a second time; True when there was one."""
    waited = False
    while live := [tmp for tmp in folder.parent.glob(f"{folder.name}.tmp-*") if tmp.is_dir() and is_locked(tmp)]:
        if not waited:
            logger.info("feature cache: another process is building %s (%s); waiting for it", folder, live[0].name)
            waited = True
        time.sleep(poll_seconds)
    return waited


def ensure_cache(cfg: RunConfig, foundation: Foundation, encoder: nn.Module, data: LTSSLData,
                 device: torch.device, poll_seconds: float = 5.0, unlabeled: bool = True) -> FeatureCache:
    """The cache folder for this run's key, built (or rebuilt, logging why) unless it matches;
    while another process builds the same key, waits for it and reuses its result. Without
    ``unlabeled`` the unlabeled split is neither encoded nor part of the key."""
    key = cache_key(cfg, foundation, data, unlabeled)
    folder = cache_root(cfg) / f"{cfg.data.dataset}-{_digest(key)[:16]}"
    reason = _stale_reason(folder, key)
    if reason is not None and _wait_for_live_builds(folder, poll_seconds):
        reason = _stale_reason(folder, key)  # None unless that build failed or was killed
    if reason is None:
        logger.info("feature cache: reusing %s", folder)
        return FeatureCache(folder, built=False)
    logger.info("feature cache: building %s (%s)", folder, reason)
    _build(folder, key, cfg, encoder, data, device, unlabeled)
    return FeatureCache(folder, built=True)


class FeatureViews(Dataset):
    """A split's cached features, items laid out as `Views` items with z [D] for each view.

    The arrays are memory-mapped on first use and not pickled, so loader workers open their own.
    """

    def __init__(self, folder: Path, split: str, view_names: list[str]) -> None:
        self.folder = folder
        self.split = split
        self.view_names = view_names
        self.labels = np.load(folder / f"{split}.label.npy")
        self.indices = np.load(folder / f"{split}.index.npy")
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {name: np.load(self.folder / f"{self.split}.{name}.npy", mmap_mode="r")
                            for name in self.view_names}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key`` is a position, or (position, sample seed) from a stream: the seed picks the
        bank entry of each view (entry 0 without one)."""
        position, seed = key if isinstance(key, tuple) else (key, 0)
        item: dict[str, Any] = {}
        for order, (name, array) in enumerate(self.arrays().items()):
            bank = array.shape[1]
            entry = (seed // bank**order) % bank
            item[name] = torch.from_numpy(array[position, entry].astype(np.float32))
        item["label"], item["index"] = int(self.labels[position]), int(self.indices[position])
        return item


def feature_data(cfg: RunConfig, foundation: Foundation, encoder: nn.Module, data: LTSSLData,
                 device: torch.device, unlabeled: bool = True) -> LTSSLData:
    """``data`` with every split served from the feature cache (built here when needed). Without
    ``unlabeled`` (a method that never reads it, e.g. ``supervised``) that split keeps its image
    views and is not encoded: it is the largest split of most protocols."""
    cache = ensure_cache(cfg, foundation, encoder, data, device, unlabeled=unlabeled)
    cached = {split: FeatureViews(cache.folder, split, list(views.transforms))
              for split, views in _splits(data, unlabeled).items()}
    return dataclasses.replace(data, **cached)
