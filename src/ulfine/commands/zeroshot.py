"""`ulfine zeroshot`: CLIP zero-shot accuracy (the first LTSSL baseline).

Two ways to say what to evaluate:

- like every other command, ``--config FILE`` and/or ``key=value`` overrides: the run config's
  base model (``model.*``, templates included) on its data protocol's test split, with its
  ``data.eval_batch_size``, ``data.num_workers``, ``train.precision`` and ``train.device``;
- without a config, ``--model`` and ``--data`` name a model and an ImageFolder ``<data>/<split>/``
  directly (the other flags give its options).
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ulfine.config import ModelConfig, load_config
from ulfine.data import build_ltssl_data
from ulfine.data.datasets import read_class_names
from ulfine.data.sources import scan_class_folders
from ulfine.data.views import Views
from ulfine.engine.amp import resolve_device
from ulfine.engine.evaluate import eval_loader, predict_logits
from ulfine.errors import UsageError
from ulfine.metrics.accuracy import ClassAccuracy
from ulfine.models.foundation import Foundation, load_foundation, templates_for

logger = logging.getLogger(__name__)

# folder-mode flag -> the config key that says it in config mode (None: the protocol decides)
_FOLDER_FLAGS = {"model": "model.name", "pretrained": "model.pretrained", "checkpoint": "model.checkpoint",
                 "data": "data.root", "split": None, "class_names": "data.class_names",
                 "templates": "model.templates", "prompt": "model.prompt", "batch_size": "data.eval_batch_size",
                 "workers": "data.num_workers", "precision": "train.precision", "device": "train.device"}
# their defaults without a config
_FOLDER_DEFAULTS = {"split": "test", "templates": "single", "prompt": ModelConfig.prompt, "batch_size": 256,
                    "workers": 2, "precision": "fp32", "device": "auto"}


@dataclass
class Target:
    """What to evaluate: the model, the test images, their class names and how to run."""

    model: ModelConfig
    description: str  # where the images come from, for the printout
    batch_size: int
    workers: int
    precision: str
    device: torch.device


def _uses_config(args: argparse.Namespace) -> bool:
    return bool(args.config or args.overrides)


def _check_flags(args: argparse.Namespace) -> None:
    """A config and the folder flags are two exclusive ways; name what to use instead."""
    if _uses_config(args):
        given = [flag for flag in _FOLDER_FLAGS if getattr(args, flag) is not None]
        if given:
            hints = [f"--{flag.replace('_', '-')} -> " + (f"{_FOLDER_FLAGS[flag]}=..." if _FOLDER_FLAGS[flag]
                                                         else "the protocol's test split") for flag in given]
            raise UsageError(f"with --config or key=value overrides, the config says what the flags say: "
                             f"{', '.join(hints)}")
    elif args.model is None or args.data is None:
        raise UsageError("give --config FILE (and/or key=value overrides), or --model and --data")


def _from_config(args: argparse.Namespace) -> tuple[Target, Foundation, Views, list[str]]:
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.train.device)
    foundation = load_foundation(cfg.model, device)
    data = build_ltssl_data(cfg.data, foundation.preprocess_cfg)
    target = Target(cfg.model, f"the {cfg.data.dataset} test split", cfg.data.eval_batch_size,
                    cfg.data.num_workers, cfg.train.precision, device)
    return target, foundation, data.test, list(data.class_names)


def _from_folder(args: argparse.Namespace) -> tuple[Target, Foundation, Views, list[str]]:
    args = argparse.Namespace(**{**vars(args), **{k: v for k, v in _FOLDER_DEFAULTS.items()
                                                   if getattr(args, k) is None}})
    device = resolve_device(args.device)
    model = ModelConfig(name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
                        templates=args.templates, prompt=args.prompt)
    foundation = load_foundation(model, device)
    split_dir = Path(args.data) / args.split
    folders, source = scan_class_folders(split_dir, "error")
    dataset = Views(source, np.arange(len(source)), {"image": foundation.eval_transform})
    names = read_class_names(args.class_names, len(folders)) if args.class_names else [
        c.replace("_", " ") for c in folders
    ]
    target = Target(model, str(split_dir), args.batch_size, args.workers, args.precision, device)
    return target, foundation, dataset, names


def zero_shot(foundation: Foundation, target: Target, dataset: Views, names: list[str]) -> dict:
    """top1 and per-class accuracy (percent) of cos(image, class text prototype)."""
    prototypes = foundation.text_prototypes(names, templates_for(target.model)).to(target.device)  # [C, D]
    loader = eval_loader(dataset, target.batch_size, target.workers)

    def logits_fn(images: torch.Tensor) -> torch.Tensor:
        return F.normalize(foundation.model.encode_image(images).float(), dim=-1) @ prototypes.T

    logits, targets = predict_logits(logits_fn, loader, target.device, target.precision, desc="zero-shot")
    accuracy = ClassAccuracy(num_classes=len(names))
    accuracy.update(logits, targets)
    measured = accuracy.compute()
    return {"top1": measured["top1"], "per_class": dict(zip(names, measured["per_class"]))}


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    target, foundation, dataset, names = (_from_config if _uses_config(args) else _from_folder)(args)
    measured = zero_shot(foundation, target, dataset, names)
    result = {"model": target.model.name, "split": target.description, "num_images": len(dataset), **measured}
    print(f"zero-shot top-1 on {target.description}: {result['top1']:.2f}% ({len(dataset)} images)")
    for name, acc in result["per_class"].items():
        print(f"  {name:>20s}  {acc:6.2f}%")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
