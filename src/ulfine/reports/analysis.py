"""The paper's analysis (ULFINE.md section 5) and the comparison table, from run folders only.

A run folder (written by the trainer) holds config.yaml, metrics.json and metrics.jsonl. The
analysis compares runs side by side: overall / head / medium / tail accuracy, per-class false
pseudo-labels and the confidence of wrong pseudo-labels (LP makes many false pseudo-labels,
LFT fewer but over-confident ones), and calibration (ECE, reliability diagram). Keys that a run
lacks (no ``calibration`` yet, no pseudo-labels for zero-shot) show as "n/a" and their figure
is left out, so old runs stay readable.

Nothing here knows a method: each method names its diagnostics (labels, per-class or scalar,
which to plot, the figure's title) and the tags of its run label in metrics.json
(``diagnostics``, ``run_tags``; see ``SSLMethod.describe_diagnostics``), and the analysis draws
what that section lists. Runs written before that section existed show no method figure.

The comparison table (bench/compare.py) aggregates finished cells as mean ± std over seeds.
"""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import yaml
from matplotlib.figure import Figure  # renders with Agg, leaves pyplot's global backend alone

from ulfine.errors import MissingFileError, RunFolderError
from ulfine.metrics.accuracy import GROUP_NAMES
from ulfine.reports.plots import curves, per_class_bars, reliability_diagram, save_figure
from ulfine.reports.runfiles import read_final_metrics, read_records, series
from ulfine.runfolder import RunFolder

logger = logging.getLogger(__name__)

MISSING = "n/a"


def pseudo_stats(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's pseudo-label diagnostics; {} when none were made (zero-shot, supervised: seen = 0)."""
    pseudo = metrics.get("pseudo_labels") or {}
    return pseudo if pseudo.get("seen") else {}


@dataclass
class RunRecord:
    """One run folder as read from disk; ``label`` names it in tables and legends."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    log: list[dict[str, Any]]
    label: str = ""

    def setting(self, section: str, key: str) -> Any:
        return (self.config.get(section) or {}).get(key)

    @property
    def pseudo(self) -> dict[str, Any]:
        return pseudo_stats(self.metrics)

    @property
    def calibration(self) -> dict[str, Any]:
        return self.metrics.get("calibration") or {}

    def diagnostics(self, kind: str, plot: bool | None = None) -> dict[str, str]:
        """key -> label of the method diagnostics of ``kind`` the run recorded (metrics.json's
        ``diagnostics`` section, written by the method; runs from before it have none)."""
        entries = (self.metrics.get("diagnostics") or {}).get("entries") or {}
        state = self.metrics.get("method_state") or {}
        return {key: entry["label"] for key, entry in entries.items()
                if key in state and entry.get("kind") == kind and (plot is None or entry.get("plot") == plot)}


def load_run(path: str | Path) -> RunRecord:
    """Read a finished run folder; a folder without metrics.json raises naming it."""
    path = Path(path)
    metrics = read_final_metrics(path)
    if metrics is None:
        raise MissingFileError(f"run folder '{path}' has no metrics.json (unfinished or not a run folder)")
    config_file = RunFolder(path).config
    config = (yaml.safe_load(config_file.read_text()) or {}) if config_file.is_file() else {}
    run = RunRecord(path, config, metrics, read_records(path))
    run.label = run_label(run)
    return run


def run_label(run: RunRecord) -> str:
    """``strategy/method`` (plus the tags the method gave the run, e.g. its ablation) from
    config.yaml and metrics.json, else the folder name."""
    strategy, method = run.setting("strategy", "name"), run.setting("method", "name")
    if not strategy or not method:
        return run.path.name
    return f"{strategy}/{method}" + "".join(f" ({tag})" for tag in run.metrics.get("run_tags") or [])


def make_labels_unique(runs: Sequence[RunRecord]) -> None:
    """Runs sharing a label (two seeds, or two variants of a method) get the shortest tail of
    their path that tells them apart appended: ``[s1]``, or ``[lp-acr-tau1/s0]`` for bench cells."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    for label, group in groups.items():
        if len(group) < 2:
            continue
        parts = [run.path.absolute().parts for run in group]
        depth = 1
        while depth < max(map(len, parts)) and len({p[-depth:] for p in parts}) < len(group):
            depth += 1
        for run, p in zip(group, parts):
            run.label = f"{label} [{'/'.join(p[-depth:])}]"


# --------------------------------------------------------------------------- table
def _train_minutes(run: RunRecord) -> float | None:
    seconds = run.metrics.get("train_seconds")
    return None if seconds is None else seconds / 60.0


# column header -> value of a run (None = not recorded)
SUMMARY_COLUMNS: dict[str, Callable[[RunRecord], Any]] = {
    "run": lambda r: r.label,
    "strategy": lambda r: r.setting("strategy", "name"),
    "method": lambda r: r.setting("method", "name"),
    "top1": lambda r: r.metrics.get("top1"),
    **{name: (lambda r, name=name: r.metrics.get(name)) for name in GROUP_NAMES},
    "ECE": lambda r: r.calibration.get("ece", r.metrics.get("ece")),
    "pseudo-label acc": lambda r: r.pseudo.get("pseudo_accuracy"),
    "mask rate": lambda r: r.pseudo.get("mask_rate"),
    "wrong-label conf": lambda r: r.pseudo.get("mean_confidence_wrong"),
    "train min": _train_minutes,
}
CONFIDENCE_COLUMNS = {"wrong-label conf"}  # in [0, 1]: one more decimal


def format_value(value: Any, digits: int = 2) -> str:
    """Floats with ``digits`` decimals, None as n/a."""
    if value is None:
        return MISSING
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(runs: Sequence[RunRecord]) -> str:
    rows = [[format_value(value_of(run), 3 if header in CONFIDENCE_COLUMNS else 2)
             for header, value_of in SUMMARY_COLUMNS.items()] for run in runs]
    return markdown_table(list(SUMMARY_COLUMNS), rows)


def pseudo_label_table(runs: Sequence[RunRecord]) -> str:
    """Per class: labeled count and, per run, wrong / passed pseudo-labels."""
    names = _class_names(runs)
    counts = runs[0].metrics.get("labeled_counts") or [None] * len(names)
    rows = []
    for k, name in enumerate(names):
        cells = [name, format_value(counts[k])]
        for run in runs:
            wrong, passed = run.pseudo.get("passed_wrong"), run.pseudo.get("passed")
            cells.append(MISSING if wrong is None or passed is None else f"{wrong[k]} / {passed[k]}")
        rows.append(cells)
    # counts cover each run's last evaluation window, which differs with train.eval_every
    rows.append(["(unlabeled seen)", "", *(format_value(run.pseudo.get("seen")) for run in runs)])
    return markdown_table(["class", "labeled", *(f"{run.label}: wrong / passed" for run in runs)], rows)


def _class_names(runs: Sequence[RunRecord]) -> list[str]:
    """The first run's class names; runs over different class sets can't share a figure."""
    names = runs[0].metrics.get("class_names") or [str(k) for k in range(len(runs[0].metrics["per_class"]))]
    for run in runs[1:]:
        other = run.metrics.get("class_names")
        if other is not None and other != names:
            raise RunFolderError(f"run '{run.path}' has classes {other}, but '{runs[0].path}' has {names}")
    return names


# ------------------------------------------------------------------------- figures
def _save(fig: Figure, path: Path) -> Path:
    save_figure(fig, path)
    return path


def plot_group_accuracy(runs: Sequence[RunRecord], path: Path) -> Path:
    """Grouped bars: overall / head / medium / tail accuracy, one series per run."""
    keys = ("top1", *GROUP_NAMES)
    values = {run.label: [_nan(run.metrics.get(key)) for key in keys] for run in runs}
    per_class_bars(path, ["overall", *GROUP_NAMES], values, ylabel="test accuracy (%)")
    return path


def plot_per_class_accuracy(runs: Sequence[RunRecord], path: Path) -> Path:
    """Test accuracy per class, one series per run, against the labeled counts (the tail)."""
    values = {run.label: [_nan(v) for v in run.metrics["per_class"]] for run in runs}
    per_class_bars(path, _class_names(runs), values, ylabel="test accuracy (%)",
                   counts=runs[0].metrics.get("labeled_counts"))
    return path


def plot_pseudo_labels(runs: Sequence[RunRecord], path: Path) -> Path | None:
    """False pseudo-labels per predicted class and, beside it, the mean confidence of those
    wrong pseudo-labels per class, one series per run, against the labeled counts; right:
    mean confidence of correct vs wrong pseudo-labels per run (LFT's over-confidence).
    None when no run has pseudo-labels."""
    runs = [run for run in runs if run.pseudo.get("passed_wrong") is not None]
    if not runs:
        return None
    names = _class_names(runs)
    counts = runs[0].metrics.get("labeled_counts")
    fig = Figure(figsize=(max(14.0, 1.0 * len(names) + 6), 4.2), layout="constrained")
    wrong, wrong_conf, overall = fig.subplots(1, 3, width_ratios=[3, 3, 1])
    per_class_bars(wrong, names, {run.label: run.pseudo["passed_wrong"] for run in runs},
                   ylabel="false pseudo-labels (above threshold)", counts=counts)
    per_class_conf = {run.label: [_nan(v) for v in run.pseudo["mean_confidence_wrong_per_class"]]
                      for run in runs if run.pseudo.get("mean_confidence_wrong_per_class") is not None}
    if per_class_conf:
        per_class_bars(wrong_conf, names, per_class_conf, ylabel="mean confidence of false pseudo-labels")
        wrong_conf.set_ylim(0, 1.35 if len(per_class_conf) > 1 else 1)  # headroom for the legend
    for ax in (wrong, wrong_conf) if per_class_conf else (wrong,):
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    confidence = {kind: [_nan(run.pseudo.get(f"mean_confidence_{kind}")) for run in runs]
                  for kind in ("correct", "wrong")}
    per_class_bars(overall, [run.label for run in runs], confidence, ylabel="mean confidence")
    overall.set_ylim(0, 1.35)  # the legend sits above 1
    overall.set_title("pseudo-label confidence", fontsize=9)
    return _save(fig, path)


def plot_pseudo_curves(runs: Sequence[RunRecord], path: Path) -> Path | None:
    """Pseudo-label accuracy, mask rate and mean confidence of wrong pseudo-labels over training:
    from each training record's "pseudo_train" window (one point per train.log_every), or, for
    runs logged before those existed, from the evaluation records; None without diagnostics."""
    keys = {"pseudo_accuracy": "pseudo-label accuracy (%)", "mask_rate": "pseudo-labels past the threshold (%)",
            "mean_confidence_wrong": "mean confidence of wrong pseudo-labels"}
    sources = {run.label: next((p for p in ("pseudo_train", "pseudo") if series(run.log, f"{p}/pseudo_accuracy")[0]),
                               None) for run in runs}
    runs = [run for run in runs if sources[run.label]]
    if not runs:
        return None
    fig = Figure(figsize=(14, 4), layout="constrained")
    for ax, (key, ylabel) in zip(fig.subplots(1, len(keys)), keys.items()):
        for run in runs:
            curves(ax, run.log, {run.label: f"{sources[run.label]}/{key}"}, ylabel=ylabel)
    return _save(fig, path)


def plot_method_diagnostics(runs: Sequence[RunRecord], path: Path) -> Path | None:
    """The per-class diagnostics each method marks for plotting (ULFine: drift of C_t from its
    initial value, its cosine to C_v, the last PAF step alpha), one panel per diagnostic, one
    series per run that has it; None when no run has one."""
    runs = [run for run in runs if run.diagnostics("per_class", plot=True)]
    if not runs:
        return None
    labels: dict[str, str] = {}
    for run in runs:
        labels.update({k: v for k, v in run.diagnostics("per_class", plot=True).items() if k not in labels})
    names = _class_names(runs)
    fig = Figure(figsize=(max(12.0, 1.2 * len(names)), 4), layout="constrained")
    for ax, (key, ylabel) in zip(fig.subplots(1, len(labels), squeeze=False)[0], labels.items()):
        values = {run.label: run.metrics["method_state"][key] for run in runs
                  if key in run.diagnostics("per_class", plot=True)}
        per_class_bars(ax, names, values, ylabel=ylabel)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    if len(runs) == 1:  # per_class_bars adds a legend only for several series
        fig.suptitle(runs[0].label, fontsize=9)
    return _save(fig, path)


def method_diagnostics_title(runs: Sequence[RunRecord]) -> str:
    """The figure titles the runs' methods give, e.g. 'ULFine: text prototypes after PAF'."""
    titles = [(run.metrics.get("diagnostics") or {}).get("title") for run in runs
              if run.diagnostics("per_class", plot=True)]
    return "; ".join(dict.fromkeys(t for t in titles if t)) or "Method diagnostics"


def scalar_diagnostics_table(runs: Sequence[RunRecord]) -> str | None:
    """run | diagnostic | value for the scalar diagnostics (ACR's tau, ULFine's L_orth); None without any."""
    rows = [[run.label, label, format_value(run.metrics["method_state"][key], 4)]
            for run in runs for key, label in run.diagnostics("scalar").items()]
    return markdown_table(["run", "diagnostic", "value at the end"], rows) if rows else None


def plot_reliability(runs: Sequence[RunRecord], path: Path) -> Path | None:
    """One reliability diagram per run with its ECE; None when no run has calibration."""
    runs = [run for run in runs if run.calibration.get("bin_edges") is not None]
    if not runs:
        return None
    fig = Figure(figsize=(4.2 * len(runs), 4.4), layout="constrained")
    for ax, run in zip(fig.subplots(1, len(runs), squeeze=False)[0], runs):
        reliability_diagram(ax, run.calibration, title=run.label)
    return _save(fig, path)


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


# (figure file, section title or a function of the runs giving it, plot function); a plot
# function returning None leaves a note instead
FIGURES: list[tuple[str, str | Callable[[Sequence[RunRecord]], str],
                    Callable[[Sequence[RunRecord], Path], Path | None]]] = [
    ("group_accuracy.png", "Accuracy by class group", plot_group_accuracy),
    ("per_class_accuracy.png", "Accuracy per class", plot_per_class_accuracy),
    ("pseudo_labels.png", "Pseudo-labels: false ones per class, and their confidence", plot_pseudo_labels),
    ("pseudo_curves.png", "Pseudo-labels during training", plot_pseudo_curves),
    ("method_diagnostics.png", method_diagnostics_title, plot_method_diagnostics),
    ("reliability.png", "Calibration (reliability diagram, test set)", plot_reliability),
]


def write_analysis(runs: Sequence[RunRecord], out: str | Path) -> Path:
    """Write ``out``/analysis.md and the PNG figures it references; returns the markdown path."""
    if not runs:
        raise ValueError("analysis needs at least one run folder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    make_labels_unique(runs)
    lines = ["# Analysis", "", "Runs:", ""]
    lines += [f"- **{run.label}**: `{run.path}`" for run in runs]
    lines += ["", "## Summary", "", summary_table(runs), "",
              "Accuracies and rates in %, confidences in [0, 1]; ECE in %; pseudo-label columns cover "
              "the last evaluation window of training.", ""]
    for filename, title, plot in FIGURES:
        title = title(runs) if callable(title) else title
        lines += [f"## {title}", ""]
        written = plot(runs, out / filename)
        lines.append(f"![{title}]({filename})" if written else f"{MISSING}: no run records the data for this figure.")
        lines.append("")
    scalars = scalar_diagnostics_table(runs)
    if scalars:
        lines += ["## Method diagnostics", "", scalars, ""]
    lines += ["## Pseudo-labels per class (wrong / passed)", "", pseudo_label_table(runs), ""]
    path = out / "analysis.md"
    path.write_text("\n".join(lines))
    logger.info("wrote %s", path)
    return path


# -------------------------------------------------------------- comparison table
def _wrong_pseudo_per_image(metrics: dict[str, Any]) -> float | None:
    """False pseudo-labels per unlabeled weak view seen (%): what the mask rate and the
    pseudo-label accuracy together cost, comparable between methods that pass few or many."""
    pseudo = pseudo_stats(metrics)
    return 100.0 * sum(pseudo["passed_wrong"]) / pseudo["seen"] if pseudo else None


def _pseudo(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda m: pseudo_stats(m).get(key)


# the table's columns; the pseudo-label ones cover each run's last evaluation window
COMPARE_METRICS: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "top1": lambda m: m.get("top1"),
    **{name: (lambda m, name=name: m.get(name)) for name in GROUP_NAMES},
    "ECE": lambda m: m.get("ece"),
    "mask %": _pseudo("mask_rate"),
    "pseudo acc %": _pseudo("pseudo_accuracy"),
    "wrong pseudo %": _wrong_pseudo_per_image,
    "train min": lambda m: None if m.get("train_seconds") is None else m["train_seconds"] / 60.0,
}


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single seed: no spread to report)."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_mean_std(values: Sequence[float]) -> str:
    """'mean ± std', just the mean for one seed, n/a for none."""
    if not values:
        return MISSING
    mean, std = mean_std(values)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def val_class_mean(metrics: dict[str, Any]) -> float | None:
    """Class-mean accuracy on the validation split (``data.val_per_class``), None without one."""
    return (metrics.get("val") or {}).get("class_mean")


def _compare_columns(runs: Iterable[dict[str, Any]]) -> dict[str, Callable[[dict[str, Any]], float | None]]:
    """COMPARE_METRICS, preceded by the validation class-mean when any run held out a
    validation split (what a setting is chosen on)."""
    if any(val_class_mean(m) is not None for m in runs):
        return {"val class-mean": val_class_mean, **COMPARE_METRICS}
    return dict(COMPARE_METRICS)


def comparison_table(results: dict[str, Sequence[dict[str, Any]]]) -> str:
    """Rows = cells in the given order, each with its finished seeds' metrics.json contents;
    columns = number of seeds, then mean ± std of each column of ``_compare_columns``."""
    columns = _compare_columns(m for metrics in results.values() for m in metrics)
    rows = []
    for cell, metrics in results.items():
        row = [cell, str(len(metrics))]
        for value_of in columns.values():
            row.append(format_mean_std([v for v in map(value_of, metrics) if v is not None]))
        rows.append(row)
    return markdown_table(["cell", "seeds", *columns], rows)


def per_seed_table(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """One row per (cell, seed) with the comparison table's columns: a results file keeps each
    run's own values, so a table can be pooled with later seeds after its run folders are gone."""
    columns = _compare_columns(m for by_seed in results.values() for m in by_seed.values())
    rows = [[cell, str(seed), *(format_value(value_of(metrics)) for value_of in columns.values())]
            for cell, by_seed in results.items() for seed, metrics in sorted(by_seed.items())]
    return markdown_table(["cell", "seed", *columns], rows)
