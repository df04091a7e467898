"""`ulfine data`: show the class distribution a config produces, without a model.

Prints the per-class labeled / unlabeled / (val) / test table with each class's head / medium /
tail group, writes it as JSON (``--json``: keys labeled_counts, unlabeled_counts, val_counts,
test_counts, class_names, groups; unlabeled_counts is null where the hidden labels are unknown) and saves a
bar plot (``--plot``; default next to the JSON file, else <output.dir>/data_distribution.png).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # renders with Agg, leaves pyplot's global backend alone

from ulfine.config import load_config
from ulfine.data.build import LTSSLSplits, build_splits, count_table
from ulfine.data.protocol import NATURAL
from ulfine.errors import UsageError

logger = logging.getLogger(__name__)


def count_record(splits: LTSSLSplits) -> dict:
    return {
        "class_names": splits.class_names,
        "labeled_counts": splits.labeled_counts,
        "unlabeled_counts": splits.unlabeled_counts,
        "val_counts": splits.val_counts,
        "test_counts": splits.test_counts,
        "groups": splits.groups,
    }


def plot_counts(splits: LTSSLSplits, title: str, path: Path) -> None:
    """Grouped bars per class (labeled, unlabeled if known, test), log scale for the long tail."""
    series = {"labeled": splits.labeled_counts, "unlabeled": splits.unlabeled_counts, "test": splits.test_counts}
    series = {name: counts for name, counts in series.items() if counts is not None}
    x = np.arange(len(splits.class_names))
    width = 0.8 / len(series)
    fig = Figure(figsize=(max(6.0, 0.45 * len(x) + 2), 4))
    ax = fig.subplots()
    for i, (name, counts) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, counts, width, label=name)
    ax.set_yscale("log")
    ax.set_xticks(x, splits.class_names if len(x) <= 30 else [str(k) for k in x], rotation=60, ha="right",
                  fontsize=8)
    ax.set_ylabel("images per class")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars fill the axes
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def plot_path(args: argparse.Namespace, output_dir: str) -> Path:
    """--plot, else beside --json, else in the config's output.dir (never the current folder)."""
    if getattr(args, "plot", None):
        return Path(args.plot)
    if args.json:
        return Path(args.json).with_suffix(".png")
    return Path(output_dir) / "data_distribution.png"


def run(args: argparse.Namespace) -> None:
    """``args``: config (path or None), overrides (list of key=value), json, plot (paths or None)."""
    run_cfg = load_config(args.config, args.overrides)
    cfg = run_cfg.data
    for option, value in (("--json", args.json), ("--plot", getattr(args, "plot", None))):
        if value and Path(value).is_dir():
            raise UsageError(f"{option} '{value}' is a folder; give a file name, e.g. {Path(value) / 'counts.json'}"
                             if option == "--json" else f"{option} '{value}' is a folder; give a .png file name")
    splits = build_splits(cfg)
    print(count_table(splits))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(count_record(splits), indent=2))
        logger.info("wrote %s", args.json)
    title = (f"{cfg.dataset}: N1={cfg.n1} M1={cfg.m1} gamma_l={cfg.gamma_l:g} gamma_u={cfg.gamma_u:g} "
             f"{cfg.distribution}") if cfg.distribution != NATURAL else f"{cfg.dataset}: {cfg.root} as it is"
    path = plot_path(args, run_cfg.output.dir)
    plot_counts(splits, title, path)
    print(f"plot: {path}")
