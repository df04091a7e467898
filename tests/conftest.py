"""Shared fixtures: a tiny random open_clip model, and the optional ../shared real data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

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


TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_local_dir(model: open_clip.CLIP, folder: Path, preprocess: dict | None = None) -> Path:
    """Write ``model`` (built from TINY_MODEL_CFG) in open_clip's local-dir format."""
    folder.mkdir(parents=True)
    preprocess = preprocess or {"size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
                                "interpolation": "bilinear"}
    config = {"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": preprocess}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


@pytest.fixture
def tiny_clip_dir(tmp_path: Path) -> Path:
    """A tiny random CLIP saved as a `local-dir:` folder."""
    return save_local_dir(make_tiny_clip(), tmp_path / "tiny-clip")


def make_image_folder(root: Path, classes: list[str], per_class: dict[str, int], seed: int = 0) -> Path:
    """``root/<split>/<class>/NNNN.png`` with random 32x32 images whose colour depends on the class."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = np.full((32, 32, 3), 40 + 60 * k, dtype=np.int16)
                pixels = np.clip(base + rng.integers(-30, 30, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """3 classes x 24 train / 4 test synthetic images."""
    return make_image_folder(tmp_path / "data", ["cat", "dog", "ship"], {"train": 24, "test": 4})


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-iteration run (LFT AdaptFormer + FixMatch, fp32, evaluated every iteration)
    on a tiny random CLIP and a 3-class synthetic folder: a run folder as the Trainer writes it."""
    from ulfine.config import load_config
    from ulfine.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("tiny-run")
    model_dir = save_local_dir(make_tiny_clip(), root / "clip")
    data_dir = make_image_folder(root / "data", ["cat", "dog", "ship"], {"train": 24, "test": 4})
    cfg = load_config(None, [
        f"model.name=local-dir:{model_dir}", "data.dataset=imagefolder", f"data.root={data_dir}",
        "data.n1=8", "data.m1=8", "data.gamma_l=2", "data.gamma_u=2", "data.batch_size=4",
        "data.num_workers=0", "data.eval_batch_size=16", "optim.iterations=2", "optim.warmup_iterations=1",
        "train.eval_every=1", "train.log_every=1", "train.precision=fp32", "train.device=cpu",
        "method.name=fixmatch", "method.threshold=0.34", "strategy.name=lft", "strategy.adapter_dim=4",
        f"output.dir={root / 'runs'}", "output.name=run", "output.tensorboard=false",
    ])
    Trainer(cfg).fit()
    return cfg.run_dir()
