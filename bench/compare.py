"""The comparison table on MiniCLIP + the shared CIFAR-10-LT, resumable cell by cell.

Cells (zero-shot; {LP, LFT, FFT} x {FixMatch, FixMatch+LA, ACR}; ULFine and its ablations)
x settings (consistent, uniform, reversed unlabeled data) x seeds all start from the same base
config (same schedule and budget) plus shared overrides. Cells and settings are data: a name
and its overrides in ``bench/compare_cells.yaml``. Each (setting, cell, seed) is one run
folder ``OUT/<setting>/<cell>/s<seed>`` trained by a subprocess ``python -m ulfine train``, so a
crash in one cell leaves the others running; a folder holding metrics.json is done and skipped,
and an interrupted one resumes from its checkpoint. Each launch of a cell appends the commit
and command to ``provenance.jsonl`` in its run folder, so a table gathered over several
invocations (or sessions) still says which code trained each cell. The table (mean ± std over seeds) goes to ``bench/results/compare-<tag>.md``
with the command line, git commit, date, machine and that per-cell provenance.

    PYTHONPATH=src python bench/compare.py --dry-run
    PYTHONPATH=src python bench/compare.py --settings consistent --seeds 0 --cells lp-fixmatch --iterations 5
    PYTHONPATH=src python bench/compare.py --table-only
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import yaml

import ulfine
from ulfine.reports.analysis import comparison_table, per_seed_table
from ulfine.reports.runfiles import read_final_metrics
from ulfine.runfolder import RunFolder

logger = logging.getLogger("bench.compare")

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "offline" / "miniclip_cifar10lt_bench.yaml"
RESULTS_IN_REPO = "bench/results"
RESULTS = REPO / RESULTS_IN_REPO

# every cell: resume an interrupted run; no TensorBoard files for a table
SHARED_OVERRIDES = ["output.resume=true", "output.tensorboard=false"]

CELLS_FILE = REPO / "bench" / "compare_cells.yaml"


def load_table(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(settings, cells) from ``path``: each a mapping name -> list of key=value overrides."""
    data = yaml.safe_load(path.read_text()) or {}
    table: dict[str, dict[str, list[str]]] = {}
    for section in ("settings", "cells"):
        rows = data.get(section)
        if not isinstance(rows, dict) or not rows:
            raise SystemExit(f"compare.py: '{path}' needs a non-empty '{section}' mapping (name -> overrides)")
        for name, overrides in rows.items():
            if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
                raise SystemExit(f"compare.py: '{path}' {section}.{name} must be a list of key=value strings, "
                                 f"got {overrides!r}")
        table[section] = {str(name): list(overrides) for name, overrides in rows.items()}
    return table["settings"], table["cells"]


# unlabeled-data setting -> overrides, and cell -> overrides, in the table's order
SETTINGS, CELLS = load_table(CELLS_FILE)


@dataclass(frozen=True)
class Job:
    """One table entry of one seed: a run folder and the command that fills it."""

    setting: str
    cell: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        return out / self.setting / self.cell / f"s{self.seed}"

    def overrides(self, out: Path, iterations: int | None, extra: list[str]) -> list[str]:
        """Later overrides win: shared, budget, user extras, setting, then the cell itself."""
        run_dir = self.run_dir(out)
        return [
            *SHARED_OVERRIDES,
            f"output.dir={run_dir.parent}", f"output.name={run_dir.name}", f"train.seed={self.seed}",
            *([f"optim.iterations={iterations}"] if iterations is not None else []),
            *extra, *SETTINGS[self.setting], *CELLS[self.cell],
        ]

    def command(self, out: Path, config: Path, iterations: int | None, extra: list[str]) -> list[str]:
        return [sys.executable, "-m", "ulfine", "train", "--config", str(config),
                *self.overrides(out, iterations, extra)]


def choose(text: str, known: Mapping[str, object], what: str) -> list[str]:
    """``all`` or a comma list of names in ``known`` (kept in the table's order); every bench
    script picks its cells and settings with it."""
    if text == "all":
        return list(known)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"{Path(sys.argv[0]).name}: unknown {what} {unknown}; known: {', '.join(known)}")
    return [name for name in known if name in names]


def plan(settings: list[str], cells: list[str], seeds: list[int]) -> list[Job]:
    return [Job(setting, cell, seed) for setting in settings for cell in cells for seed in seeds]


def is_finished(job: Job, out: Path) -> bool:
    return RunFolder(job.run_dir(out)).is_finished()


def pending(jobs: list[Job], out: Path) -> list[Job]:
    """The jobs whose run folder has no metrics.json yet (a rerun does only these)."""
    return [job for job in jobs if not is_finished(job, out)]


def _subprocess_env() -> dict[str, str]:
    """The child imports the same ulfine as this script (also from a checkout via PYTHONPATH)."""
    source = str(Path(ulfine.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def run_job(command: list[str], log_file: Path) -> int:
    """Run one cell, its output in ``log_file``; returns the exit code (never raises on failure).

    On Ctrl-C the child (same process group) gets SIGINT too and writes its checkpoint; wait for
    it rather than kill it, then pass the interrupt on."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=REPO, env=_subprocess_env(), stdout=handle, stderr=subprocess.STDOUT)
        try:
            return process.wait()
        except KeyboardInterrupt:
            logger.warning("interrupted: waiting for the running cell to save its checkpoint")
            process.wait()
            raise


def collect_by_seed(out: Path, settings: list[str], cells: list[str],
                    seeds: list[int]) -> dict[str, dict[str, dict[int, dict]]]:
    """setting -> cell -> seed -> metrics.json contents, for the finished seeds only."""
    results: dict[str, dict[str, dict[int, dict]]] = {}
    for setting in settings:
        results[setting] = {}
        for cell in cells:
            found = {seed: read_final_metrics(Job(setting, cell, seed).run_dir(out)) for seed in seeds}
            results[setting][cell] = {seed: metrics for seed, metrics in found.items() if metrics is not None}
    return results


def git_commit(repo: Path = REPO) -> str:
    """HEAD's hash, with '-dirty' when tracked files other than the results differ from it.

    bench/results/ is left out: the benchmarks write their tables there while they run, and
    that alone would mark every later cell of the same run as trained on a modified tree.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS_IN_REPO}")
        return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError) as err:
        return f"unknown ({err})"


PROVENANCE = "provenance.jsonl"


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def record_launch(run_dir: Path, command: list[str]) -> None:
    """Append which commit and command (re)started this cell: a resumed cell lists every launch."""
    run_dir.mkdir(parents=True, exist_ok=True)
    entry = {"commit": git_commit(), "date": now_iso(), "command": shlex.join(command)}
    with (run_dir / PROVENANCE).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def provenance(out: Path, jobs: list[Job]) -> str:
    """Markdown list: for each commit, the finished cells it trained (all launches counted)."""
    by_commit: dict[str, list[str]] = {}
    for job in jobs:
        if not is_finished(job, out):
            continue
        path = job.run_dir(out) / PROVENANCE
        commits = [json.loads(line)["commit"] for line in path.read_text().splitlines() if line.strip()] \
            if path.is_file() else ["not recorded"]
        for commit in dict.fromkeys(commits):
            by_commit.setdefault(commit, []).append(f"{job.setting}/{job.cell}/s{job.seed}")
    return "\n".join(f"- `{commit}`: {', '.join(cells)}" for commit, cells in by_commit.items())


REBUILD_FLAGS = ("--table-only", "--plot-only", "--report-only", "--dry-run")  # train nothing


def command_line(script: str, argv: list[str]) -> str:
    """The command that trains a results file's runs: ``argv`` without the flags that only rebuild
    the file from finished runs, so a rebuilt file still names how its cells were made."""
    return shlex.join(["python", f"bench/{script}", *(arg for arg in argv if arg not in REBUILD_FLAGS)])


def report(results: dict[str, dict[str, dict[int, dict]]], argv: list[str], failed: list[Job], trained_by: str) -> str:
    """The results file: per setting the mean ± std table, then each run's own values, then
    which commit trained each cell (``results``: collect_by_seed's)."""
    lines = [
        "# Comparison table: MiniCLIP on CIFAR-10-LT", "",
        f"- command: `{command_line('compare.py', argv)}`",
        f"- commit: `{git_commit()}`",
        f"- date: {now_iso()}",
        f"- machine: {os.cpu_count()} CPUs",
        "- cells: mean ± sample std over finished seeds (the mean alone for one seed);"
        " accuracies and ECE (test set) in %, train time in minutes; the pseudo-label columns (mask"
        " rate, pseudo-label accuracy, false pseudo-labels per unlabeled weak view seen, in %) cover"
        " each run's last evaluation window", "",
    ]
    if failed:
        lines += [f"- failed this time: {', '.join(f'{j.setting}/{j.cell}/s{j.seed}' for j in failed)}", ""]
    for setting, by_cell in results.items():
        table = {cell: list(runs.values()) for cell, runs in by_cell.items()}
        lines += [f"## {setting} unlabeled data", "", comparison_table(table), ""]
    lines += ["## Each seed's values", "", "The same columns for each finished run.", ""]
    for setting, by_cell in results.items():
        lines += [f"### {setting}", "", per_seed_table(by_cell), ""]
    lines += ["## Which commit trained each cell", "",
              "From each run folder's `provenance.jsonl` (a cell resumed under another commit is listed under both);",
              "the train time column is wall clock and depends on what else the machine ran.", "",
              trained_by or "- (no finished cells)", ""]
    return "\n".join(lines)


def run_pending(todo: list[Job], out: Path, command_of: Callable[[Job], list[str]]) -> tuple[list[Job], bool]:
    """Run the jobs one after another; returns (the failed ones, whether Ctrl-C stopped the loop)."""
    failed = []
    try:
        for number, job in enumerate(todo, start=1):
            if is_finished(job, out):  # another process sharing --out finished it meanwhile
                logger.info("[%d/%d] %s / %s / seed %d: finished meanwhile, skipped",
                            number, len(todo), job.setting, job.cell, job.seed)
                continue
            logger.info("[%d/%d] %s / %s / seed %d", number, len(todo), job.setting, job.cell, job.seed)
            command = command_of(job)
            record_launch(job.run_dir(out), command)
            code = run_job(command, job.run_dir(out) / "compare.log")
            if code != 0:
                logger.error("cell failed (exit %d); see %s", code, job.run_dir(out) / "compare.log")
                failed.append(job)
    except KeyboardInterrupt:
        return failed, True  # the table of what finished is still written; a rerun continues
    return failed, False


def add_run_arguments(parser: argparse.ArgumentParser, out: Path | None, out_help: str, tag_help: str,
                      rebuild: tuple[str, str]) -> None:
    """--set, --out, --tag, --dry-run and the rebuild-from-finished-runs flag: the same in every bench script."""
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="extra key=value override for every run (repeatable)")
    parser.add_argument("--out", type=Path, default=out, help=out_help)
    parser.add_argument("--tag", default=None, help=tag_help)
    parser.add_argument("--dry-run", action="store_true", help="print the pending commands, run nothing")
    parser.add_argument(rebuild[0], action="store_true", help=rebuild[1])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="consistent,uniform,reversed", help=f"all or of {list(SETTINGS)}")
    parser.add_argument("--seeds", default="0,1", help="comma list of seeds")
    parser.add_argument("--cells", default="all", help=f"all or of {list(CELLS)}")
    parser.add_argument("--iterations", type=int, default=None, help="override optim.iterations (not zeroshot)")
    parser.add_argument("--config", type=Path, default=BASE_CONFIG, help="base run config")
    add_run_arguments(parser, REPO / "bench" / "_work" / "compare", "run folders",
                      "results file compare-<tag>.md (default: --out's name)",
                      ("--table-only", "rebuild the table from finished cells"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, config = args.out.resolve(), args.config.resolve()
    settings = choose(args.settings, SETTINGS, "settings")
    cells = choose(args.cells, CELLS, "cells")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    jobs = plan(settings, cells, seeds)
    todo = [] if args.table_only else pending(jobs, out)
    if args.dry_run:
        for job in todo:
            print(shlex.join(job.command(out, config, args.iterations, args.extra)))
        return 0
    failed, interrupted = run_pending(todo, out, lambda job: job.command(out, config, args.iterations, args.extra))
    path = RESULTS / f"compare-{args.tag or out.name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report(collect_by_seed(out, settings, cells, seeds), argv, failed, provenance(out, jobs)))
    logger.info("wrote %s", path)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
