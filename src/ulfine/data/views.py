"""`Views`: a subset of an image source, each item one or more transformed views as a dict.

Item layout (what the trainer consumes; `default_collate` stacks it into a batch dict):

- labeled:      {"image": weak view [3, H, W], "label": class, "index": source index}
- unlabeled:    {"weak": [3, H, W], "strong": [3, H, W], "label": hidden class or -1, "index"}
- val / test:   {"image": eval view [3, H, W], "label": class, "index"}

"index" is the image's position in ``views.source`` (the full training set for labeled and
unlabeled data, the test set for test), stable across runs: a key for feature caches.

Bad images (data.bad_images): 'error' raises `BadImageError` naming the file; 'skip' logs a
warning naming it and, in a training split, serves the next readable image of this subset
instead (with that image's own label and index). An evaluation split (``substitute=False``)
never substitutes: the item keeps its index, gets a blank image and the label ``DROPPED``
(-1), and evaluation leaves it out and reports how many it left out (`predict_logits`).
``skipped`` counts the skips of this process only: with loader workers each worker keeps its
own count, and the warnings in the log are the full record.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from ulfine.data.sources import BadImageError, BadImagePolicy, ImageSource

logger = logging.getLogger(__name__)

DROPPED = -1  # label of an unreadable evaluation image under 'skip': left out of the metrics


class Views(Dataset):
    """``source`` restricted to ``indices``; ``transforms`` maps each view name to its transform."""

    def __init__(
        self,
        source: ImageSource,
        indices: Any,
        transforms: dict[str, Callable[[Image.Image], Any]],
        bad_images: BadImagePolicy = "error",
        substitute: bool = True,
    ) -> None:
        self.source = source
        self.substitute = substitute
        self.indices = [int(i) for i in indices]
        self.transforms = transforms
        self.bad_images = bad_images
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key`` is a position, or (position, seed): the seed fixes the random augmentation of
        this sample (streams pass it), without touching the caller's global RNG state."""
        position, seed = key if isinstance(key, tuple) else (key, None)
        index, image = self.load_readable(position)
        label = int(self.source.targets[index])
        if image is None:
            image, label = Image.new("RGB", (1, 1)), DROPPED
        if seed is None:
            item: dict[str, Any] = {name: transform(image) for name, transform in self.transforms.items()}
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                item = {name: transform(image) for name, transform in self.transforms.items()}
        item["label"] = label
        item["index"] = index
        return item

    def load_readable(self, position: int) -> tuple[int, Image.Image | None]:
        """(source index, image) at ``position``, or under 'skip' the next readable one (an
        evaluation split: the image is None)."""
        for step in range(len(self.indices)):
            index = self.indices[(position + step) % len(self.indices)]
            try:
                return index, self.source.load(index)
            except BadImageError as err:
                if self.bad_images == "error":
                    raise
                self.skipped += 1
                if not self.substitute:
                    logger.warning("leaving a bad image out of the evaluation: %s", err)
                    return index, None
                logger.warning("skipping bad image (%d skipped in this process): %s", self.skipped, err)
        raise BadImageError(f"no readable image among the {len(self.indices)} of this split")
