"""A self-contained HTML report of one run folder (figures embedded as base64 PNG).

Sections: summary (top-1, head / medium / tail, ECE), config, per-class accuracy against the
labeled counts, confusion matrix, learning curves, pseudo-label diagnostics over time and the
reliability diagram. Everything comes from the run's files, except the test-set predictions
(confusion matrix, and reliability when metrics.json has no calibration bins), which the
caller computes and passes in; a section whose inputs are missing says why instead of failing.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ulfine.errors import MissingFileError
from ulfine.metrics.accuracy import GROUP_NAMES
from ulfine.metrics.calibration import calibration
from ulfine.reports.plots import (
    class_heatmap,
    confusion_matrix_plot,
    curves,
    figure_png_base64,
    heatmap_size,
    loss_curves,
    per_class_bars,
    reliability_diagram,
)
from ulfine.reports.runfiles import loss_keys, read_final_metrics, read_records, series
from ulfine.runfolder import RunFolder

SECTION_TITLES = (
    "Summary", "Config", "Per-class accuracy", "Confusion matrix", "Learning curves",
    "Pseudo-labels", "Reliability",
)


@dataclass
class TestPredictions:
    """The run's model on its test split."""

    logits: Tensor  # [N, C]
    targets: Tensor  # [N]
    class_names: list[str]


@dataclass
class ReportInputs:
    """What the sections read; ``predictions_note`` says why ``predictions`` is None."""

    run_dir: Path
    config_text: str
    metrics: dict[str, Any] | None
    records: list[dict[str, Any]]
    predictions: TestPredictions | None
    predictions_note: str = ""

    @property
    def class_names(self) -> list[str]:
        """From metrics.json, else from the predictions (a run that has not finished)."""
        names = (self.metrics or {}).get("class_names")
        if names:
            return list(names)
        return list(self.predictions.class_names) if self.predictions is not None else []


def read_inputs(run_dir: str | Path, predictions: TestPredictions | None,
                predictions_note: str = "") -> ReportInputs:
    run_dir = Path(run_dir)
    config_path = RunFolder(run_dir).config
    if not config_path.is_file():
        raise MissingFileError(f"'{run_dir}' is not a run folder: it has no config.yaml")
    return ReportInputs(run_dir, config_path.read_text(), read_final_metrics(run_dir), read_records(run_dir),
                        predictions, predictions_note)


# ------------------------------------------------------------------ helpers
def _figure(draw: Callable[[Axes], None], size: tuple[float, float] = (6.0, 4.0)) -> str:
    fig = Figure(figsize=size, layout="constrained")
    draw(fig.subplots())
    return f'<img alt="figure" src="data:image/png;base64,{figure_png_base64(fig)}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _row(figures: list[str]) -> str:
    """Figures side by side, wrapping on narrow windows."""
    return '<div class="row">' + "".join(f"<div>{f}</div>" for f in figures) + "</div>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "n/a" if value is None else str(value)


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """[C, C] counts, rows = true class, columns = predicted class."""
    flat = targets.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _reliability_bins(inputs: ReportInputs) -> dict[str, Any] | None:
    """Bins from metrics.json when the trainer wrote them, else from the test predictions."""
    if inputs.metrics and inputs.metrics.get("calibration"):
        return inputs.metrics["calibration"]
    if inputs.predictions is not None:
        return calibration(inputs.predictions.logits, inputs.predictions.targets).to_dict()
    return None


# ----------------------------------------------------------------- sections
def summary_section(inputs: ReportInputs) -> str:
    metrics = inputs.metrics
    if metrics is None:
        return _note("metrics.json is missing: the run has not finished (see the learning curves).")
    bins = _reliability_bins(inputs)
    ece = metrics.get("ece", bins["ece"] if bins else None)
    cfg = yaml.safe_load(inputs.config_text) or {}
    rows = [["method", run_description(cfg, metrics.get("run_tags") or [])], ["dataset", dataset_description(cfg)]]
    rows += [[f"{key} accuracy (%)", metrics.get(key)] for key in ("top1", *GROUP_NAMES)]
    rows += [["zero-shot top-1 (%)", zero_shot_reference(inputs, cfg)],
             ["weights reported", metrics.get("selected", "final")],
             ["ECE (%)", ece], ["iterations", metrics.get("iterations")],
             ["training time (s)", metrics.get("train_seconds")]]
    return _table(["metric", "value"], rows)


def run_description(cfg: dict[str, Any], tags: list[str]) -> str:
    """'LFT (adaptformer) + ulfine' from config.yaml, with the tags the method wrote into
    metrics.json (how the run differs from the method's defaults; reports know no method)."""
    strategy, method = cfg.get("strategy", {}), cfg.get("method", {})
    name = str(strategy.get("name", "?"))
    peft = f" ({strategy.get('peft')})" if name == "lft" else ""
    text = f"{name.upper()}{peft} + {method.get('name', '?')}"
    text += "".join(f" ({tag})" for tag in tags)
    model = cfg.get("model", {}).get("name")
    return f"{text}; model {model}" if model else text


def dataset_description(cfg: dict[str, Any]) -> str:
    data = cfg.get("data", {})
    text = f"{data.get('dataset', '?')} at {data.get('root', '?')}"
    if data.get("distribution") == "natural":
        return f"{text}, natural (as it is)"
    return (f"{text}, N1={data.get('n1')} M1={data.get('m1')} gamma_l={data.get('gamma_l')} "
            f"gamma_u={data.get('gamma_u')} {data.get('distribution')}")


def zero_shot_reference(inputs: ReportInputs, cfg: dict[str, Any]) -> str | float:
    """The zero-shot top-1 of the same model and test set when the run has it, else how to get it."""
    value = (inputs.metrics or {}).get("zeroshot_top1")
    if value is not None:
        return value
    model, data = cfg.get("model", {}).get("name", "MODEL"), cfg.get("data", {}).get("root", "DATA")
    return f"not in this run (ulfine zeroshot --model {model} --data {data})"


def config_section(inputs: ReportInputs) -> str:
    return f"<pre>{html.escape(inputs.config_text)}</pre>"


def per_class_section(inputs: ReportInputs) -> str:
    metrics = inputs.metrics
    if metrics is None or not metrics.get("per_class"):
        return _note("no per-class accuracy: metrics.json is missing.")
    names, counts, accuracy = inputs.class_names, metrics.get("labeled_counts"), metrics["per_class"]
    figure = _figure(lambda ax: per_class_bars(ax, names, {"test accuracy": accuracy}, counts=counts),
                     (max(7.0, 0.35 * len(names)), 4.0))
    rows = sorted(zip(names, counts or [None] * len(names), accuracy), key=lambda r: -(r[1] or 0))
    return figure + _table(["class", "labeled images", "test accuracy (%)"], [list(r) for r in rows])


def confusion_section(inputs: ReportInputs) -> str:
    if inputs.predictions is None:
        return _note(f"not computed: {inputs.predictions_note or 'no test predictions were given'}")
    names = inputs.class_names
    matrix = confusion_matrix(inputs.predictions.logits.argmax(-1), inputs.predictions.targets, len(names))
    size = max(5.0, 0.45 * len(names))
    return _figure(lambda ax: confusion_matrix_plot(ax, matrix.numpy(), names), (size + 1.0, size))


def learning_section(inputs: ReportInputs) -> str:
    records = inputs.records
    if not records:
        return _note("metrics.jsonl is missing or empty.")
    parts = []
    if loss_keys(records):
        parts.append(_figure(lambda ax: loss_curves(ax, records)))
    if series(records, "test/top1")[0]:
        parts.append(_figure(lambda ax: curves(ax, records, {"test top-1": "test/top1", "val top-1": "val/top1"},
                                               ylabel="accuracy (%)", title="Test accuracy")))
    return _row(parts) if parts else _note("metrics.jsonl holds no losses or evaluations yet.")


def _pseudo_records(inputs: ReportInputs) -> list[dict[str, Any]]:
    """Eval records with pseudo-label diagnostics, plus the last stretch from metrics.json."""
    records = [r for r in inputs.records if r.get("pseudo")]
    final = (inputs.metrics or {}).get("pseudo_labels")
    if final:
        records.append({"iteration": inputs.metrics["iterations"], "pseudo": final})
    return records


def pseudo_section(inputs: ReportInputs) -> str:
    records = _pseudo_records(inputs)
    if not records:
        return _note("no pseudo-label diagnostics (the method uses no unlabeled data, or no evaluation ran).")
    rates = _figure(lambda ax: curves(ax, records, {"mask rate": "pseudo/mask_rate",
                                                     "pseudo-label accuracy": "pseudo/pseudo_accuracy"},
                                      ylabel="%", title="Pseudo-labels passing the threshold"))
    names = inputs.class_names or [str(k) for k in range(len(records[0]["pseudo"]["passed_wrong"]))]
    iterations, wrong = series(records, "pseudo/passed_wrong")
    heat = _figure(lambda ax: class_heatmap(ax, wrong, [f"it {i}" for i in iterations], names,
                                            title="Wrong pseudo-labels per predicted class",
                                            colorbar_label="count"),
                   heatmap_size(names, len(iterations)))
    caption = '<p class="caption">Each row covers the iterations since the previous evaluation.</p>'
    return _row([rates, heat]) + caption


def reliability_section(inputs: ReportInputs) -> str:
    bins = _reliability_bins(inputs)
    if bins is None:
        return _note(f"not computed: {inputs.predictions_note or 'no calibration bins or test predictions'}")
    return _figure(lambda ax: reliability_diagram(ax, bins, title="Test reliability"), (4.5, 4.5))


SECTIONS: dict[str, Callable[[ReportInputs], str]] = dict(zip(SECTION_TITLES, (
    summary_section, config_section, per_class_section, confusion_section, learning_section,
    pseudo_section, reliability_section,
)))

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
td { text-align: right; } td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: .8em; max-height: 30em; overflow: auto; font-size: .85em; }
img { max-width: 100%; display: block; margin: .5em 0; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; } .row > div { flex: 1 1 480px; }
.note { color: #a33; font-style: italic; }
.caption { color: #555; font-size: .9em; }
"""


def section_id(title: str) -> str:
    return title.lower().replace(" ", "-")


def render_report(inputs: ReportInputs) -> str:
    """The report as one HTML string."""
    title = html.escape(f"ulfine run report: {inputs.run_dir.name}")
    body = "".join(f'<section id="{section_id(key)}"><h2>{html.escape(key)}</h2>{draw(inputs)}</section>'
                   for key, draw in SECTIONS.items())
    folder = html.escape(str(inputs.run_dir.resolve()))
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
            f"<p>run folder: <code>{folder}</code></p>{body}</body></html>")


def write_report(inputs: ReportInputs, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(inputs))
    return path
