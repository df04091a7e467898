"""Choose ULFine's [ours] options on the validation split: a resumable grid sweep (issue 13).

Each grid point is ULFine with one value per option (``--grid KEY=V1,V2``, repeatable; KEY a
config key such as ``method.ulfine.lp_head`` or ``method.threshold``), trained for a given
strategy (``lp``: the heads on cached frozen features; ``lft``) and length with
``data.val_per_class`` held out (``--val-source unused``: that many images per class that the
split leaves unused, so the training data stay the table's), over several seeds. ``--design full`` runs every combination
(64 for the default grid); ``oat`` the first values and one key changed at a time (1 + 6).
The points become cells of ``bench/compare.py`` (``<strategy>-ulfine+key=value+...``), so
they are run, skipped when finished, resumed and given provenance exactly like the comparison
table's cells: ``OUT/<setting>/<cell>/s<seed>``. The name holds no schedule: use one OUT per
--iterations / --set list. LP points share one feature cache per seed (``OUT/.feature_cache``).
The table ranks the points by validation class-mean accuracy (mean ± std over seeds) and
shows test top-1 / tail beside it; pick the defaults from the val column, not the test ones.
Its last column pairs each point with the first one seed by seed (the difference's mean ± std
and in how many seeds it is higher): the validation split is small, so the spread across
seeds hides differences that the same seeds show.
It goes to ``bench/results/ulfine-sweep-<tag>.md``.

    PYTHONPATH=src python bench/ulfine_sweep.py --strategy lp --iterations 2000 --seeds 0,1,2 --dry-run
    PYTHONPATH=src python bench/ulfine_sweep.py --strategy lp --iterations 2000 --seeds 0,1,2
    PYTHONPATH=src python bench/ulfine_sweep.py --strategy lp --iterations 10 --seeds 0 \\
        --grid method.ulfine.lp_head=linear,cosine --out bench/_work/sweep-smoke
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import compare
from compare import (
    BASE_CONFIG, REPO, RESULTS, Job, add_run_arguments, choose, command_line, git_commit, now_iso, plan, provenance,
    run_pending,
)

from ulfine.reports.analysis import COMPARE_METRICS, MISSING, format_mean_std, markdown_table, val_class_mean

logger = logging.getLogger("bench.ulfine_sweep")

# the options of ULFINE.md section 3 / issue 13, each at its spec-literal value first
DEFAULT_GRID: dict[str, list[str]] = {
    "method.ulfine.lp_head": ["linear", "cosine"],
    "method.ulfine.text_loss": ["ce", "la"],
    "method.ulfine.train_text_prototypes": ["true", "false"],
    "method.ulfine.paf_mode": ["literal", "centred"],
    "method.ulfine.lp_loss": ["la", "ce_fuse_prior"],
    "method.ulfine.fusion_scale": ["1", "0.5"],
    "method.threshold": ["0.95"],
}

# table columns after the options: validation first (it ranks), then the test numbers
SWEEP_METRICS: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "val class-mean": val_class_mean,
    "test top1": COMPARE_METRICS["top1"],
    "test tail": COMPARE_METRICS["tail"],
    "train min": COMPARE_METRICS["train min"],
}


def short_key(key: str) -> str:
    """``method.ulfine.lp_head`` -> ``lp_head``, ``method.threshold`` -> ``threshold``."""
    return key.removeprefix("method.ulfine.").removeprefix("method.")


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["KEY=V1,V2", ...]`` -> {KEY: [V1, V2]} in the given order (DEFAULT_GRID when empty)."""
    if not items:
        return dict(DEFAULT_GRID)
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        choices = [value.strip() for value in values.split(",") if value.strip()]
        if not sep or not key.strip() or not choices:
            raise SystemExit(f"ulfine_sweep.py: --grid {item!r} is not KEY=V1,V2 (e.g. method.ulfine.lp_head=linear,cosine)")
        grid[key.strip()] = choices
    shorts = [short_key(key) for key in grid]
    if len(set(shorts)) != len(shorts):
        raise SystemExit(f"ulfine_sweep.py: two --grid keys share a short name: {shorts}")
    return grid


def grid_points(grid: dict[str, list[str]], design: str = "full") -> list[dict[str, str]]:
    """full: every combination; oat (one at a time): the base point (each key's first value)
    and, for each key, each of its other values with the rest at the base."""
    if design == "full":
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    base = {key: values[0] for key, values in grid.items()}
    return [base, *({**base, key: value} for key, values in grid.items() for value in values[1:])]


def grid_cells(strategy: str, grid: dict[str, list[str]], design: str = "full") -> dict[str, list[str]]:
    """The grid's points -> {cell name: its overrides}; the name holds every grid key, so a
    rerun with the same keys finds its finished folders again (whatever the design)."""
    cells = {}
    for point in grid_points(grid, design):
        name = f"{strategy}-ulfine" + "".join(f"+{short_key(key)}={value}" for key, value in point.items())
        cells[name] = [f"strategy.name={strategy}", "method.name=ulfine", *(f"{k}={v}" for k, v in point.items())]
    return cells


def val_by_seed(runs: dict[str, dict[int, dict]]) -> dict[str, dict[int, float]]:
    """cell -> seed -> validation class-mean, from compare.collect_by_seed's runs of one setting."""
    table: dict[str, dict[int, float]] = {}
    for cell, by_seed in runs.items():
        values = {seed: val_class_mean(metrics) for seed, metrics in by_seed.items()}
        table[cell] = {seed: value for seed, value in values.items() if value is not None}
    return table


def paired_difference(values: dict[int, float], base: dict[int, float]) -> str:
    """values - base over the seeds both finished: mean ± std, and in how many seeds it is higher.
    The same seed shares the split and the cache, so the paired spread is smaller than either
    column's (lp_scale, 10 seeds: ± 2.3 against ± 3.8 / 4.5): the split moves both points alike."""
    seeds = sorted(values.keys() & base.keys())
    diffs = [values[seed] - base[seed] for seed in seeds]
    if not diffs:
        return MISSING
    return f"{format_mean_std(diffs)} (higher in {sum(d > 0 for d in diffs)}/{len(diffs)})"


def ranked_table(runs: dict[str, dict[int, dict]], cells: dict[str, list[str]], grid: dict[str, list[str]]) -> str:
    """One row per grid point (``runs``: cell -> seed -> metrics, compare.collect_by_seed): its
    option values, seeds, then SWEEP_METRICS as mean ± std, best validation class-mean first
    (points without a finished seed last); the last column pairs each point's validation score
    with the first point's (each key's first value: the current default or the spec) seed by seed."""
    results = {cell: list(by_seed.values()) for cell, by_seed in runs.items()}
    by_seed = val_by_seed(runs)

    def val_mean(cell: str) -> float:
        values = [v for v in map(SWEEP_METRICS["val class-mean"], results[cell]) if v is not None]
        return sum(values) / len(values) if values else float("-inf")

    base = next(iter(cells))
    rows = []
    for cell in sorted(results, key=val_mean, reverse=True):
        options = [override.partition("=")[2] for override in cells[cell][-len(grid):]]
        metrics = [format_mean_std([v for v in map(value_of, results[cell]) if v is not None])
                   for value_of in SWEEP_METRICS.values()]
        paired = "(base)" if cell == base else paired_difference(by_seed[cell], by_seed[base])
        rows.append([*options, str(len(results[cell])), *metrics, paired])
    paired_header = f"val - {base.partition('+')[2] or base}, paired by seed"
    return markdown_table([*map(short_key, grid), "seeds", *SWEEP_METRICS, paired_header], rows)


def report(table: str, argv: list[str], failed: list[Job], trained_by: str) -> str:
    lines = [
        "# ULFine options on the validation split", "",
        f"- command: `{command_line('ulfine_sweep.py', argv)}`",
        f"- commit: `{git_commit()}`",
        f"- date: {now_iso()}",
        f"- machine: {os.cpu_count()} CPUs",
        "- ranked by validation class-mean accuracy (mean ± sample std over finished seeds; the mean"
        " alone for one seed); test top-1 / tail for reference only; accuracies in %", "",
    ]
    if failed:
        lines += [f"- failed this time: {', '.join(f'{j.setting}/{j.cell}/s{j.seed}' for j in failed)}", ""]
    lines += [table, "", "## Which commit trained each point", "", trained_by or "- (no finished points)", ""]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=["lp", "lft"], default="lp", help="lp (cached features) or lft")
    default_grid = " ".join(f"{key}={','.join(values)}" for key, values in DEFAULT_GRID.items())
    parser.add_argument("--grid", action="append", default=[], help=f"KEY=V1,V2 (repeatable); default: {default_grid}")
    parser.add_argument("--design", choices=["full", "oat"], default="full",
                        help="full: every combination; oat: the first values, then one key changed at a time")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    parser.add_argument("--iterations", type=int, default=None, help="override optim.iterations")
    parser.add_argument("--val-per-class", type=int, default=10, help="data.val_per_class (> 0)")
    parser.add_argument("--val-source", choices=["labeled", "unused"], default="labeled",
                        help="data.val_source: held out of the labeled images, or balanced from the unused ones")
    parser.add_argument("--settings", default="consistent", help=f"all or of {list(compare.SETTINGS)}")
    parser.add_argument("--config", type=Path, default=BASE_CONFIG, help="base run config")
    add_run_arguments(parser, None,
                      "run folders, one per schedule and --set list: a finished point is skipped by name "
                      "(default bench/_work/ulfine-sweep-<strategy>-it<iterations>)",
                      "results file ulfine-sweep-<tag>.md (default: --out's name)",
                      ("--table-only", "rebuild the table from finished points"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.val_per_class < 1:
        raise SystemExit("ulfine_sweep.py: --val-per-class must be >= 1: the options are chosen on validation data")
    schedule = f"it{args.iterations}" if args.iterations is not None else "itbase"
    out = (args.out or REPO / "bench" / "_work" / f"ulfine-sweep-{args.strategy}-{schedule}").resolve()
    config = args.config.resolve()
    grid = parse_grid(args.grid)
    cells = grid_cells(args.strategy, grid, args.design)
    compare.CELLS.update(cells)  # the points are compare cells: same run folders, commands, provenance
    settings = choose(args.settings, compare.SETTINGS, "settings")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    jobs = plan(settings, list(cells), seeds)
    extra = [f"data.val_per_class={args.val_per_class}", f"data.val_source={args.val_source}", f"train.cache_dir={out / '.feature_cache'}", *args.extra]
    command_of = lambda job: job.command(out, config, args.iterations, extra)  # noqa: E731
    todo = [] if args.table_only else compare.pending(jobs, out)
    if args.dry_run:
        for job in todo:
            print(shlex.join(command_of(job)))
        return 0
    failed, interrupted = run_pending(todo, out, command_of)
    sections = []
    for setting, runs in compare.collect_by_seed(out, settings, list(cells), seeds).items():
        sections += [f"## {setting} unlabeled data, {args.strategy}", "", ranked_table(runs, cells, grid), ""]
    path = RESULTS / f"ulfine-sweep-{args.tag or out.name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report("\n".join(sections), argv, failed, provenance(out, jobs)))
    logger.info("wrote %s", path)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
