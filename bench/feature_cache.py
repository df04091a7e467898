"""End-to-end cost of the frozen-feature path: LP + FixMatch with and without the feature cache.

Both runs train the same config (same schedule, same evaluation: once, at the end) as a
subprocess ``python -m ulfine train`` and are timed from start to exit, so the cached run pays
for loading the model, building its cache from scratch (a fresh cache folder) and evaluating.
The encoder is frozen in both; the only difference is whether each step encodes its images
(``train.feature_cache=false``) or reads K precomputed augmentations per image.

The saving grows with the schedule: the cache costs a fixed number of encodes
(labeled x K + unlabeled x 2K + test), a non-cached step encodes batch x (1 + 2 x uratio)
images, so pick ``--iterations`` for the schedule you care about; the table reports both.
Resumable: a finished run (its ``wall.json``) is kept, a rerun does only what is missing.

    PYTHONPATH=src python bench/feature_cache.py --iterations 2500 --banks 1
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from compare import BASE_CONFIG, REPO, RESULTS, git_commit, now_iso, run_job

from ulfine.reports.runfiles import read_final_metrics

logger = logging.getLogger("bench.feature_cache")


def run_once(name: str, overrides: list[str], out: Path, config: Path) -> dict:
    """Train one run (unless already done) and return its wall time and final metrics."""
    run_dir = out / name
    record = run_dir / "wall.json"
    if record.is_file():
        logger.info("%s: done before, kept", name)
        return json.loads(record.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # a partial run would not time end to end
    command = [sys.executable, "-m", "ulfine", "train", "--config", str(config),
               f"output.dir={out}", f"output.name={name}", "output.tensorboard=false", *overrides]
    logger.info("%s: %s", name, " ".join(command[3:]))
    start = time.perf_counter()
    code = run_job(command, out / f"{name}.log")
    wall = time.perf_counter() - start
    metrics = read_final_metrics(run_dir)
    if code != 0 or metrics is None:
        raise SystemExit(f"feature_cache.py: run {name} failed (exit {code}); see {out / f'{name}.log'}")
    result = {"name": name, "wall_seconds": wall, "train_seconds": metrics.get("train_seconds"),
              "top1": metrics["top1"], "head": metrics["head"], "medium": metrics["medium"],
              "tail": metrics["tail"], "overrides": overrides}
    record.write_text(json.dumps(result, indent=1))
    return result


def report(rows: list[dict], argv: list[str], iterations: int) -> str:
    base = rows[0]
    lines = [
        "# Frozen-feature path: LP + FixMatch end to end, with and without the feature cache", "",
        f"- command: `python bench/feature_cache.py {' '.join(argv)}`",
        f"- commit: `{git_commit()}`",
        f"- date: {now_iso()}",
        f"- machine: {os.cpu_count()} CPUs; {iterations} iterations, evaluation once at the end",
        "- wall = the whole `ulfine train` process (model load, cache build from an empty folder, training, test)",
        "",
        "| run | wall s | train-loop s | speed-up (wall) | top1 | head | medium | tail | top1 - uncached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['wall_seconds']:.1f} | {row['train_seconds']:.1f} | "
            f"{base['wall_seconds'] / row['wall_seconds']:.2f}x | {row['top1']:.2f} | {row['head']:.2f} | "
            f"{row['medium']:.2f} | {row['tail']:.2f} | {row['top1'] - base['top1']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2500)
    parser.add_argument("--banks", default="1", help="comma list of K (augmentations per image) to time")
    parser.add_argument("--config", type=Path, default=BASE_CONFIG)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra key=value for both runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "_work" / "feature_cache")
    parser.add_argument("--tag", default="miniclip-c10lt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out.resolve() / f"it{args.iterations}"
    shared = ["strategy.name=lp", "method.name=fixmatch", f"optim.iterations={args.iterations}",
              f"train.eval_every={args.iterations}", f"train.checkpoint_every={args.iterations}", *args.extra]
    rows = [run_once("uncached", [*shared, "train.feature_cache=false"], out, args.config.resolve())]
    for bank in (int(k) for k in args.banks.split(",")):
        cache_dir = out / f"cache-k{bank}-folder"
        if not (out / f"cached-k{bank}" / "wall.json").is_file():
            shutil.rmtree(cache_dir, ignore_errors=True)  # build from scratch: the cost is part of the run
        rows.append(run_once(f"cached-k{bank}", [*shared, "train.feature_cache=true", f"train.feature_bank={bank}",
                                                 f"train.cache_dir={cache_dir}"], out, args.config.resolve()))
    text = report(rows, argv, args.iterations)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"feature-cache-{args.tag}-it{args.iterations}.md").write_text(text)
    (RESULTS / f"feature-cache-{args.tag}-it{args.iterations}.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
