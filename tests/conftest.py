"""Shared fixtures: a tiny random open_clip model, and the optional ../shared real data."""
from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MINICLIP = SHARED / "models" / "miniclip-ti200"
CIFAR10 = SHARED / "datasets" / "cifar10"


def make_tiny_clip(seed: int = 0, image_size: int = 32) -> open_clip.CLIP:
    """A randomly initialised 2-block ViT CLIP: fast enough for unit tests."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=image_size),
        text_cfg=open_clip.CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    )
    return model.eval()


@pytest.fixture
def tiny_clip() -> open_clip.CLIP:
    return make_tiny_clip()


@pytest.fixture
def miniclip_dir() -> Path:
    if not (MINICLIP / "open_clip_config.json").is_file():
        pytest.skip(f"needs the shared MiniCLIP model at {MINICLIP} (absent in a fresh clone)")
    return MINICLIP


@pytest.fixture
def cifar10_dir() -> Path:
    if not (CIFAR10 / "test").is_dir():
        pytest.skip(f"needs the shared CIFAR-10 folders at {CIFAR10} (absent in a fresh clone)")
    return CIFAR10
