"""`ulfine train --config FILE [key=value ...]`: one strategy x method run (torchrun-compatible)."""
from __future__ import annotations

import argparse
import json

from ulfine.config import load_config
from ulfine.engine.distributed import shutdown
from ulfine.engine.trainer import Trainer


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg)
    try:
        result = trainer.fit()
    finally:
        shutdown()
    if result and trainer.dist.is_main:
        summary = {k: result[k] for k in ("top1", "head", "medium", "tail", "train_seconds")}
        print(json.dumps({"run_dir": str(trainer.run_dir), **summary}, indent=2))
    return 0
