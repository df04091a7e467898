"""Learning curves: test class-mean accuracy and pseudo-label statistics over iterations.

Runs the given cells of ``bench/compare.py`` (same base config, cell and setting overrides, run
folder layout ``OUT/<setting>/<cell>/s<seed>``, provenance and skip-finished logic: a rerun
trains only what is missing and resumes interrupted cells) for ``--iterations`` with an
evaluation every ``--eval-every`` iterations, then draws one figure
``bench/results/curves-<tag>.png`` (one line per cell, the mean over seeds: test class-mean
top-1, pseudo-label mask rate, pseudo-label accuracy, mean confidence of wrong pseudo-labels)
and the numbers behind it in ``bench/results/curves-<tag>.md``.

Each evaluation record of metrics.jsonl carries ``test`` and, for the pseudo-labels made since
the previous evaluation, ``pseudo``; the last point comes from metrics.json (its test metrics
and the pseudo-labels since the last evaluation).

    PYTHONPATH=src python bench/curves.py --iterations 20 --eval-every 10 --cells lp-fixmatch --tag smoke
    PYTHONPATH=src python bench/curves.py --iterations 5000 --eval-every 250 --seeds 0
"""
from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (bench/compare.py: cells, settings, jobs, provenance)

from ulfine.reports.analysis import markdown_table  # noqa: E402
from ulfine.reports.plots import save_figure  # noqa: E402
from ulfine.reports.runfiles import lookup, read_final_metrics, read_records  # noqa: E402

logger = logging.getLogger("bench.curves")

DEFAULT_CELLS = "lp-fixmatch,lp-fixmatch-la,lft-fixmatch,lft-fixmatch-la,fft-fixmatch,fft-fixmatch-la"
# panel key (as runfiles.lookup reads an evaluation record) -> y label
PANELS: dict[str, str] = {
    "test/class_mean": "test class-mean top-1 (%)",
    "pseudo/mask_rate": "pseudo-label mask rate (%)",
    "pseudo/pseudo_accuracy": "pseudo-label accuracy (%)",
    "pseudo/mean_confidence_wrong": "mean confidence of wrong pseudo-labels",
}


def evaluation_records(run_dir: Path) -> list[dict[str, Any]]:
    """The run's evaluations in order: metrics.jsonl's periodic ones, then the final one from
    metrics.json ([] while the run is unfinished)."""
    final = read_final_metrics(run_dir)
    if final is None:
        return []
    periodic = [r for r in read_records(run_dir) if "test" in r and "pseudo" in r]
    return [*periodic, {"iteration": final["iterations"], "test": final, "pseudo": final.get("pseudo_labels") or {}}]


def mean_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    """(iterations, mean over the runs that have ``key`` there) for one cell's seeds."""
    values: dict[int, list[float]] = {}
    for records in runs:
        for record in records:
            value = lookup(record, key)
            if isinstance(value, (int, float)):
                values.setdefault(int(record["iteration"]), []).append(float(value))
    iterations = sorted(values)
    return iterations, [statistics.fmean(values[it]) for it in iterations]


def collect_curves(out: Path, jobs: list[compare.Job]) -> dict[str, list[list[dict[str, Any]]]]:
    """'<setting>/<cell>' (just the cell for one setting) -> the evaluation records of each finished seed."""
    settings = {job.setting for job in jobs}
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for job in jobs:
        records = evaluation_records(job.run_dir(out))
        if records:
            label = job.cell if len(settings) == 1 else f"{job.setting}/{job.cell}"
            curves.setdefault(label, []).append(records)
    return curves


def plot(curves: dict[str, list[list[dict[str, Any]]]], path: Path, title: str) -> None:
    fig = Figure(figsize=(16, 4.2), layout="constrained")
    for ax, (key, ylabel) in zip(fig.subplots(1, len(PANELS)), PANELS.items()):
        for label, runs in curves.items():
            iterations, values = mean_curve(runs, key)
            if iterations:
                ax.plot(iterations, values, marker="o" if len(iterations) < 30 else None, markersize=3, label=label)
        ax.set(xlabel="iteration", ylabel=ylabel)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def report(curves: dict[str, list[list[dict[str, Any]]]], argv: list[str], trained_by: str, figure: Path) -> str:
    lines = [
        "# Learning curves: MiniCLIP on CIFAR-10-LT", "",
        f"- command: `{compare.command_line('curves.py', argv)}`",
        f"- commit: `{compare.git_commit()}`",
        f"- date: {compare.now_iso()}",
        f"- figure: `{figure.name}`; values are means over the finished seeds (count in brackets)", "",
    ]
    for key, ylabel in PANELS.items():
        iterations = sorted({it for runs in curves.values() for it in mean_curve(runs, key)[0]})
        rows = []
        for label, runs in curves.items():
            points = dict(zip(*mean_curve(runs, key)))
            rows.append([f"{label} ({len(runs)})", *(f"{points[it]:.3g}" if it in points else "" for it in iterations)])
        lines += [f"## {ylabel}", "", markdown_table(["cell", *map(str, iterations)], rows), ""]
    lines += ["## Which commit trained each cell", "", trained_by or "- (no finished cells)", ""]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=DEFAULT_CELLS, help=f"all or of {list(compare.CELLS)}")
    parser.add_argument("--settings", default="consistent", help=f"all or of {list(compare.SETTINGS)}")
    parser.add_argument("--seeds", default="0", help="comma list of seeds")
    parser.add_argument("--iterations", type=int, required=True, help="optim.iterations of every cell")
    parser.add_argument("--eval-every", type=int, required=True, help="train.eval_every (and checkpoint_every)")
    parser.add_argument("--config", type=Path, default=compare.BASE_CONFIG, help="base run config")
    compare.add_run_arguments(parser, compare.REPO / "bench" / "_work" / "curves", "run folders",
                              "results files curves-<tag>.* (default: it<iterations>)",
                              ("--plot-only", "redraw from the finished cells"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.iterations < 1 or args.eval_every < 1:
        raise SystemExit("curves.py: --iterations and --eval-every must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, config = args.out.resolve(), args.config.resolve()
    cells = compare.choose(args.cells, compare.CELLS, "cells")
    settings = compare.choose(args.settings, compare.SETTINGS, "settings")
    jobs = compare.plan(settings, cells, [int(seed) for seed in args.seeds.split(",")])
    # checkpoint at every evaluation, so an interrupted cell loses at most one interval
    extra = [f"train.eval_every={args.eval_every}", f"train.checkpoint_every={args.eval_every}", *args.extra]

    def command_of(job: compare.Job) -> list[str]:
        return job.command(out, config, args.iterations, extra)

    todo = [] if args.plot_only else compare.pending(jobs, out)
    if args.dry_run:
        for job in todo:
            print(shlex.join(command_of(job)))
        return 0
    failed, interrupted = compare.run_pending(todo, out, command_of)
    tag = args.tag or f"it{args.iterations}"
    figure = compare.RESULTS / f"curves-{tag}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    curves = collect_curves(out, jobs)
    plot(curves, figure, f"MiniCLIP, CIFAR-10-LT ({', '.join(settings)}), {args.iterations} iterations")
    path = compare.RESULTS / f"curves-{tag}.md"
    path.write_text(report(curves, argv, compare.provenance(out, jobs), figure))
    logger.info("wrote %s and %s", figure, path)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
