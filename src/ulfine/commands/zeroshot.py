"""`ulfine zeroshot`: CLIP zero-shot accuracy on an ImageFolder split (the first LTSSL baseline)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ulfine.config import ModelConfig
from ulfine.data.datasets import read_class_names
from ulfine.data.sources import scan_class_folders
from ulfine.data.views import Views
from ulfine.engine.amp import resolve_device
from ulfine.engine.evaluate import eval_loader, predict_logits
from ulfine.metrics.accuracy import ClassAccuracy
from ulfine.models.foundation import load_foundation, templates_for

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    cfg = ModelConfig(
        name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
        templates=args.templates, prompt=args.prompt,
    )
    foundation = load_foundation(cfg, device)
    split_dir = Path(args.data) / args.split
    folders, source = scan_class_folders(split_dir, "error")
    dataset = Views(source, np.arange(len(source)), {"image": foundation.eval_transform})
    names = read_class_names(args.class_names, len(folders)) if args.class_names else [
        c.replace("_", " ") for c in folders
    ]
    prototypes = foundation.text_prototypes(names, templates_for(cfg)).to(device)  # [C, D]
    loader = eval_loader(dataset, args.batch_size, args.workers)

    def logits_fn(images: torch.Tensor) -> torch.Tensor:
        return F.normalize(foundation.model.encode_image(images).float(), dim=-1) @ prototypes.T

    logits, targets = predict_logits(logits_fn, loader, device, args.precision, desc="zero-shot")
    accuracy = ClassAccuracy(num_classes=len(names))
    accuracy.update(logits, targets)
    measured = accuracy.compute()
    result = {
        "model": args.model,
        "split": args.split,
        "num_images": len(dataset),
        "top1": measured["top1"],
        "per_class": dict(zip(names, measured["per_class"])),
    }
    print(f"zero-shot top-1 on {split_dir}: {result['top1']:.2f}% ({len(dataset)} images)")
    for name, acc in result["per_class"].items():
        print(f"  {name:>20s}  {acc:6.2f}%")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
