"""Accuracy against training cost: LTSSL from scratch vs. the foundation-model strategies.

On the offline CIFAR-10-LT (consistent), each cell is one run with periodic evaluation; every
evaluation record carries the cumulative cost (``cost``: images seen, training FLOPs, training
seconds; `ulfine.engine.cost`). Cells: WRN-28-2 from scratch with FixMatch+LA and ACR
(configs/offline/scratch_cifar10lt.yaml), and on MiniCLIP (configs/offline/miniclip_cifar10lt_bench.yaml,
the cells of ``compare.py``) LP, LFT and FFT with FixMatch+LA, FFT with ACR, and ULFine. LP runs
without the feature cache here, so its cost is that of its own training steps.

The figure (class-mean top-1 vs. training FLOPs and vs. wall clock, two panels) and a report go
to ``bench/results/cost-<tag>.{png,md,json}``. The report gives, for each scratch cell:

- (a) the cost at which it first reaches ULFine's final accuracy, divided by ULFine's cost;
- (b) if it never does within its budget, its accuracy at 10x ULFine's cost (interpolated
  between evaluations in log cost; not given beyond the end of its curve: no extrapolation);
- FFT against scratch at equal cost: both cells' accuracy at the end of the shorter curve.

Runs are resumable exactly like ``compare.py`` (its helpers: a folder with metrics.json is
done, an interrupted one resumes, each launch appends to provenance.jsonl).

    PYTHONPATH=src python bench/cost.py --dry-run
    PYTHONPATH=src python bench/cost.py --iterations 500 --scratch-iterations 5000 --evals 10
    PYTHONPATH=src python bench/cost.py --report-only
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402
    CELLS, REPO, RESULTS, add_run_arguments, choose, command_line, git_commit, is_finished, now_iso, pending,
    provenance, run_pending,
)

from ulfine.reports.runfiles import read_records  # noqa: E402

logger = logging.getLogger("bench.cost")

CONFIGS = REPO / "configs" / "offline"
FOUNDATION_CONFIG = CONFIGS / "miniclip_cifar10lt_bench.yaml"
SCRATCH_CONFIG = CONFIGS / "scratch_cifar10lt.yaml"
SHARED_OVERRIDES = ["output.resume=true", "output.tensorboard=false"]


@dataclass(frozen=True)
class Cell:
    config: Path
    overrides: list[str]
    scratch: bool = False


CELL_SPECS: dict[str, Cell] = {
    "scratch-fixmatch-la": Cell(SCRATCH_CONFIG, ["method.name=fixmatch_la"], scratch=True),
    "scratch-acr": Cell(SCRATCH_CONFIG, ["method.name=acr"], scratch=True),
    "lp-fixmatch-la": Cell(FOUNDATION_CONFIG, [*CELLS["lp-fixmatch-la"], "train.feature_cache=false"]),
    "lft-fixmatch-la": Cell(FOUNDATION_CONFIG, CELLS["lft-fixmatch-la"]),
    "fft-fixmatch-la": Cell(FOUNDATION_CONFIG, CELLS["fft-fixmatch-la"]),
    "fft-acr": Cell(FOUNDATION_CONFIG, CELLS["fft-acr"]),
    "ulfine": Cell(FOUNDATION_CONFIG, CELLS["ulfine"]),
}
# FFT cell -> the scratch cell with the same SSL method, compared at equal cost (the shorter curve's end)
FFT_VS_SCRATCH = {"fft-fixmatch-la": "scratch-fixmatch-la", "fft-acr": "scratch-acr"}
REFERENCE = "ulfine"


@dataclass(frozen=True)
class CostJob:
    """One cell and seed (``setting`` is fixed: compare.py's provenance helper names it)."""

    cell: str
    seed: int
    setting: str = "consistent"

    def run_dir(self, out: Path) -> Path:
        return out / self.setting / self.cell / f"s{self.seed}"

    def command(self, out: Path, iterations: int | None, evals: int, extra: list[str]) -> list[str]:
        spec = CELL_SPECS[self.cell]
        run_dir = self.run_dir(out)
        schedule = []
        if iterations is not None:
            schedule = [f"optim.iterations={iterations}", f"train.eval_every={max(iterations // evals, 1)}"]
        return [sys.executable, "-m", "ulfine", "train", "--config", str(spec.config), *SHARED_OVERRIDES,
                f"output.dir={run_dir.parent}", f"output.name={run_dir.name}", f"train.seed={self.seed}",
                *schedule, *extra, *spec.overrides]


# ------------------------------------------------------------------ curves
@dataclass(frozen=True)
class Point:
    flops: float
    seconds: float
    accuracy: float  # class-mean top-1 on the (balanced) test set, %


def curve(records: list[dict]) -> list[Point]:
    """The evaluation records that carry a cost, in training order."""
    points = []
    for record in records:
        test, cost = record.get("test"), record.get("cost")
        if not test or not cost:
            continue
        accuracy = test.get("class_mean", test.get("top1"))
        points.append(Point(float(cost["train_flops"]), float(cost["train_seconds"]), float(accuracy)))
    return points


def cost_to_reach(points: list[Point], target: float, axis: str = "flops") -> float | None:
    """The cost of the first evaluation at or above ``target`` (None if none is)."""
    return next((getattr(p, axis) for p in points if p.accuracy >= target), None)


def accuracy_at(points: list[Point], cost: float, axis: str = "flops") -> float | None:
    """Accuracy at ``cost``, linear in log cost between the evaluations around it; None outside
    the curve (no extrapolation)."""
    for before, after in zip(points, points[1:]):
        lo, hi = getattr(before, axis), getattr(after, axis)
        if lo <= cost <= hi and lo > 0:
            weight = 0.0 if hi == lo else (math.log(cost) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return before.accuracy + weight * (after.accuracy - before.accuracy)
    if points and math.isclose(getattr(points[-1], axis), cost, rel_tol=1e-9):
        return points[-1].accuracy
    return None


def summarise(curves: dict[str, list[Point]]) -> dict:
    """The ratios of the module docstring, per scratch cell, on the FLOPs axis (and seconds)."""
    summary: dict = {"reference": REFERENCE, "scratch": {}, "fft_vs_scratch": {}}
    reference = curves.get(REFERENCE)
    if not reference:
        return summary
    final = reference[-1]
    summary["reference_final"] = vars(final)
    for cell, spec in CELL_SPECS.items():
        if not spec.scratch or not curves.get(cell):
            continue
        points = curves[cell]
        entry: dict = {"final": vars(points[-1])}
        for axis in ("flops", "seconds"):
            reached = cost_to_reach(points, final.accuracy, axis)
            ref_cost = getattr(final, axis)
            entry[f"cost_ratio_{axis}"] = None if reached is None else reached / ref_cost
            entry[f"accuracy_at_10x_{axis}"] = accuracy_at(points, 10 * ref_cost, axis)
            entry[f"budget_ratio_{axis}"] = getattr(points[-1], axis) / ref_cost
        summary["scratch"][cell] = entry
    for fft, scratch in FFT_VS_SCRATCH.items():
        if curves.get(fft) and curves.get(scratch):
            entry = {"scratch_cell": scratch, "fft_final": vars(curves[fft][-1])}
            for axis in ("flops", "seconds"):  # equal cost: the end of the shorter of the two curves
                at = min(getattr(curves[fft][-1], axis), getattr(curves[scratch][-1], axis))
                entry[f"equal_{axis}"] = at
                entry[f"fft_accuracy_at_equal_{axis}"] = accuracy_at(curves[fft], at, axis)
                entry[f"scratch_accuracy_at_equal_{axis}"] = accuracy_at(curves[scratch], at, axis)
            summary["fft_vs_scratch"][fft] = entry
    return summary


# ------------------------------------------------------------------ output
def plot(curves: dict[str, list[Point]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    by_flops, by_time = fig.subplots(1, 2, sharey=True)
    for cell, points in curves.items():
        if not points:
            continue
        style = "--" if CELL_SPECS[cell].scratch else "-"
        accuracy = [p.accuracy for p in points]
        by_flops.plot([p.flops for p in points], accuracy, style, marker="o", ms=3, label=cell)
        by_time.plot([p.seconds for p in points], accuracy, style, marker="o", ms=3, label=cell)
    for axes, label in ((by_flops, "training FLOPs"), (by_time, "training wall clock (s)")):
        axes.set_xscale("log")
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
    by_flops.set_ylabel("class-mean top-1 (%)")
    by_time.legend(fontsize=8)
    fig.suptitle("CIFAR-10-LT (offline): accuracy vs. training cost")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _ratio(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}x"


def report(curves: dict[str, list[Point]], summary: dict, argv: list[str], figure: Path, trained_by: str) -> str:
    lines = ["# Accuracy vs. training cost: scratch (WRN-28-2) vs. MiniCLIP strategies, CIFAR-10-LT", "",
             f"- command: `{command_line('cost.py', argv)}`",
             f"- commit: `{git_commit()}`", f"- date: {now_iso()}", f"- machine: {os.cpu_count()} CPUs",
             f"- figure: `{figure.relative_to(REPO) if figure.is_relative_to(REPO) else figure}`", "",
             "| cell | evaluations | final class-mean top-1 (%) | train FLOPs | train seconds |",
             "|---|---|---|---|---|"]
    for cell, points in curves.items():
        if points:
            last = points[-1]
            lines.append(f"| {cell} | {len(points)} | {last.accuracy:.2f} | {last.flops:.3g} | {last.seconds:.0f} |")
    lines.append("")
    if "reference_final" in summary:
        ref = summary["reference_final"]
        lines += [f"ULFine's final accuracy {ref['accuracy']:.2f} % at {ref['flops']:.3g} FLOPs, "
                  f"{ref['seconds']:.0f} s.", "",
                  "| scratch cell | (a) cost to reach ULFine / ULFine's cost (FLOPs; seconds) | "
                  "(b) accuracy at 10x ULFine's cost (FLOPs; seconds) | budget run / ULFine's cost (FLOPs) |",
                  "|---|---|---|---|"]
        for cell, entry in summary["scratch"].items():
            lines.append(
                f"| {cell} | {_ratio(entry['cost_ratio_flops'])}; {_ratio(entry['cost_ratio_seconds'])} | "
                f"{_fmt(entry['accuracy_at_10x_flops'], '.2f', 'beyond the curve')}; "
                f"{_fmt(entry['accuracy_at_10x_seconds'], '.2f', 'beyond the curve')} | "
                f"{entry['budget_ratio_flops']:.1f}x |")
        lines.append("")
    if summary["fft_vs_scratch"]:
        lines += ["FFT against scratch at equal cost (both curves at the end of the shorter one):", "",
                  "| FFT cell | scratch cell | equal FLOPs | FFT (%) | scratch (%) | equal seconds | FFT (%) | scratch (%) |",
                  "|---|---|---|---|---|---|---|---|"]
        for fft, entry in summary["fft_vs_scratch"].items():
            lines.append(f"| {fft} | {entry['scratch_cell']} | {entry['equal_flops']:.3g} | "
                         f"{_fmt(entry['fft_accuracy_at_equal_flops'])} | {_fmt(entry['scratch_accuracy_at_equal_flops'])} | "
                         f"{entry['equal_seconds']:.0f} | {_fmt(entry['fft_accuracy_at_equal_seconds'])} | "
                         f"{_fmt(entry['scratch_accuracy_at_equal_seconds'])} |")
        lines.append("")
    lines += ["Accuracies between evaluations are interpolated linearly in log cost; '-' or 'beyond the curve': "
              "the cost lies outside the evaluated range (nothing is extrapolated). Wall clock is the training "
              "steps only, on this machine, and depends on what else it ran.", "",
              "## Which commit trained each cell", "", trained_by or "- (no finished cells)", ""]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="all", help=f"all or a comma list of {list(CELL_SPECS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="optim.iterations of the MiniCLIP cells")
    parser.add_argument("--scratch-iterations", type=int, default=None, help="optim.iterations of the scratch cells")
    parser.add_argument("--evals", type=int, default=10, help="evaluations per run (sets train.eval_every)")
    add_run_arguments(parser, REPO / "bench" / "_work" / "cost", "run folders",
                      "results files cost-<tag>.* (default: --out's name)",
                      ("--report-only", "rebuild figure and report from finished cells"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out.resolve()
    jobs = [CostJob(cell, args.seed) for cell in choose(args.cells, CELL_SPECS, "cells")]

    def command_of(job: CostJob) -> list[str]:
        iterations = args.scratch_iterations if CELL_SPECS[job.cell].scratch else args.iterations
        return job.command(out, iterations, args.evals, args.extra)

    todo = [] if args.report_only else pending(jobs, out)
    if args.dry_run:
        for job in todo:
            print(shlex.join(command_of(job)))
        return 0
    failed, interrupted = run_pending(todo, out, command_of)
    finished = [job for job in jobs if is_finished(job, out)]
    curves = {job.cell: curve(read_records(job.run_dir(out))) for job in finished}
    summary = summarise(curves)
    tag = args.tag or out.name
    figure = RESULTS / f"cost-{tag}.png"
    plot(curves, figure)
    (RESULTS / f"cost-{tag}.json").write_text(json.dumps(
        {"curves": {cell: [vars(p) for p in points] for cell, points in curves.items()}, "summary": summary}, indent=2))
    path = RESULTS / f"cost-{tag}.md"
    path.write_text(report(curves, summary, argv, figure, provenance(out, finished)))
    if failed:
        logger.error("failed cells: %s", ", ".join(job.cell for job in failed))
    logger.info("wrote %s", path)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
