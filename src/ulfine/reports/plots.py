"""Generic plots shared by `ulfine report` and `ulfine analyze`.

Every function draws on ``target``: a matplotlib ``Axes`` (to compose figures) or a file path
(a one-panel figure is made and saved there). Figures are built with ``matplotlib.figure.Figure``
(Agg canvas), so pyplot's global state and backend are never touched.
"""
from __future__ import annotations

import base64
import contextlib
import io
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ulfine.reports.runfiles import loss_keys, series

Target = Axes | str | Path


@contextlib.contextmanager
def axes_for(target: Target, figsize: tuple[float, float] = (6.0, 4.0)) -> Iterator[Axes]:
    """Yield ``target`` itself, or the axes of a new figure that is saved to ``target`` after."""
    if isinstance(target, Axes):
        yield target
        return
    fig = Figure(figsize=figsize, layout="constrained")
    yield fig.subplots()
    save_figure(fig, target)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)


def figure_png_base64(fig: Figure, dpi: int = 110) -> str:
    """The figure as a base64 PNG, for ``<img src="data:image/png;base64,...">``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def reliability_diagram(target: Target, bins: dict[str, Any], title: str = "Reliability") -> None:
    """Accuracy vs confidence per bin, from ``ReliabilityBins.to_dict()`` (bin_edges,
    bin_accuracy, bin_confidence, bin_count, ece in percent); the diagonal is perfect calibration."""
    edges = np.asarray(bins["bin_edges"])
    accuracy, confidence = np.asarray(bins["bin_accuracy"]), np.asarray(bins["bin_confidence"])
    count = np.asarray(bins["bin_count"])
    filled = count > 0
    with axes_for(target, (4.5, 4.5)) as ax:
        width = np.diff(edges)
        ax.bar(edges[:-1][filled], accuracy[filled], width=width[filled], align="edge",
               edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(edges[:-1][filled], (confidence - accuracy)[filled], bottom=accuracy[filled],
               width=width[filled], align="edge", color="tab:red", alpha=0.3, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{title} (ECE {bins['ece']:.2f}%)" if "ece" in bins else title)
        ax.legend(loc="upper left")


def per_class_bars(
    target: Target,
    class_names: Sequence[str],
    values: dict[str, Sequence[float]],
    ylabel: str = "accuracy (%)",
    counts: Sequence[int] | None = None,
    counts_label: str = "labeled images",
) -> None:
    """Grouped bars per class, one series per entry of ``values``; optional ``counts`` drawn as
    a line on a second axis (log for a long tail), so accuracy reads against class frequency."""
    positions = np.arange(len(class_names))
    width = 0.8 / max(len(values), 1)
    with axes_for(target, (max(6.0, 0.35 * len(class_names)), 4.0)) as ax:
        for i, (label, heights) in enumerate(values.items()):
            ax.bar(positions + (i - (len(values) - 1) / 2) * width, heights, width=width, label=label)
        crowded = len(class_names) > 6
        ax.set_xticks(positions, class_names, rotation=60 if crowded else 0, ha="right" if crowded else "center")
        ax.set_ylabel(ylabel)
        if len(values) > 1:
            legend_above_bars(ax, len(values))
        if counts is not None:
            twin = ax.twinx()
            twin.plot(positions, counts, "ko-", markersize=3, label=counts_label)
            positive = [c for c in counts if c > 0]
            if positive and max(positive) >= 10 * min(positive):  # long tail: a log axis reads better
                twin.set_yscale("log")
            twin.set_ylim(bottom=0 if twin.get_yscale() == "linear" else None)
            twin.set_ylabel(counts_label)


def legend_above_bars(ax: Axes, series: int, headroom: float = 1.35) -> None:
    """A one-row legend in headroom added above the tallest bar, so it never covers a bar
    (call after the final y limits are set)."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, bottom + (top - bottom) * headroom)
    ax.legend(loc="upper center", ncols=min(series, 4), fontsize=8, frameon=False)


def confusion_matrix_plot(
    target: Target, matrix: np.ndarray, class_names: Sequence[str], normalize: bool = True
) -> None:
    """Heatmap of ``matrix`` [C, C] (rows: true class, columns: predicted); rows normalised to
    percent when ``normalize``; cells annotated when there are at most 20 classes."""
    matrix = np.asarray(matrix, dtype=float)
    if normalize:
        matrix = 100.0 * matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1.0, None)
    size = max(4.5, 0.45 * len(class_names))
    with axes_for(target, (size + 1.0, size)) as ax:
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=60, ha="right")
        ax.set_yticks(ticks, class_names)
        ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix" + (" (% of row)" if normalize else ""))
        if len(class_names) <= 20:
            threshold = matrix.max() / 2
            for (row, col), value in np.ndenumerate(matrix):
                ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > threshold else "black")
        ax.figure.colorbar(image, ax=ax, shrink=0.8)


def curves(target: Target, records: list[dict[str, Any]], keys: dict[str, str], ylabel: str = "",
           title: str = "") -> None:
    """One line per ``label -> key`` over iterations (keys as in ``runfiles.lookup``:
    "loss/total", "test/top1", "pseudo/mask_rate")."""
    with axes_for(target) as ax:
        for label, key in keys.items():
            iterations, values = series(records, key)
            if iterations:
                ax.plot(iterations, values, marker="o" if len(iterations) < 30 else None,
                        markersize=3, label=label)
        ax.set(xlabel="iteration", ylabel=ylabel, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if keys:
            ax.legend()


def loss_curves(target: Target, records: list[dict[str, Any]]) -> None:
    """Every ``loss/<name>`` in metrics.jsonl over iterations."""
    keys = {key.removeprefix("loss/"): key for key in loss_keys(records)}
    curves(target, records, keys, ylabel="loss", title="Training losses")


def heatmap_size(class_names: Sequence[str], rows: int) -> tuple[float, float]:
    """Figure inches for `class_heatmap`: room for the rows, the title and the class names
    rotated 60 degrees below (about 0.07 inch per character), so no label is clipped."""
    label_room = 0.07 * max((len(name) for name in class_names), default=0)
    return max(7.0, 0.4 * len(class_names)), 1.4 + 0.3 * rows + label_room


def class_heatmap(
    target: Target, rows: Sequence[Sequence[float]], row_labels: Sequence[str], class_names: Sequence[str],
    title: str = "", colorbar_label: str = "",
) -> None:
    """A [R, C] grid of per-class values, e.g. wrong pseudo-labels per class at each evaluation."""
    grid = np.asarray(rows, dtype=float).reshape(len(row_labels), len(class_names))
    with axes_for(target, heatmap_size(class_names, len(row_labels))) as ax:
        image = ax.imshow(grid, aspect="auto", cmap="Reds")
        ax.set_xticks(np.arange(len(class_names)), class_names, rotation=60, ha="right")
        ax.set_yticks(np.arange(len(row_labels)), row_labels)
        ax.set_title(title)
        ax.figure.colorbar(image, ax=ax, label=colorbar_label)
