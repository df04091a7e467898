"""`ulfine report` on a tiny finished run: every section present, figures embedded, and a
missing dataset explained in the sections that need it instead of a crash."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from ulfine.cli import main
from ulfine.reports.html import SECTION_TITLES, confusion_matrix, section_id


def section(text: str, title: str) -> str:
    match = re.search(rf'<section id="{section_id(title)}">(.*?)</section>', text, re.S)
    assert match, f"section '{title}' missing"
    return match.group(1)


def test_report_has_every_section(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(tiny_run), "--out", str(out), "--device", "cpu", "--workers", "0"]) == 0
    text = out.read_text()
    for title in SECTION_TITLES:
        assert 'class="note"' not in section(text, title), title
    for title in ("Per-class accuracy", "Confusion matrix", "Learning curves", "Pseudo-labels", "Reliability"):
        assert "data:image/png;base64," in section(text, title), title
    assert "strategy:" in section(text, "Config") and "src=\"http" not in text
    summary = section(text, "Summary")
    assert "LFT (adaptformer) + fixmatch" in summary and "imagefolder at" in summary
    assert "zero-shot top-1" in summary and "ulfine zeroshot --model" in summary  # the run has none: how to get it


def test_report_without_data_says_so(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = run / "config.yaml"
    config.write_text(re.sub(r"root: .*", f"root: {tmp_path / 'gone'}", config.read_text()))
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out), "--device", "cpu", "--workers", "0"]) == 0
    confusion = section(out.read_text(), "Confusion matrix")
    assert 'class="note"' in confusion and "gone" in confusion
    assert "data:image/png;base64," in section(out.read_text(), "Per-class accuracy")


def test_confusion_matrix_counts_repeated_pairs() -> None:
    preds, targets = torch.tensor([0, 0, 2, 1, 1]), torch.tensor([0, 0, 1, 1, 2])
    expected = torch.tensor([[2, 0, 0], [0, 1, 1], [0, 1, 0]])
    assert torch.equal(confusion_matrix(preds, targets, 3), expected)


def test_report_of_unfinished_run(tiny_run: Path, tmp_path: Path) -> None:
    """No metrics.json yet: the summary says so, the test predictions still give the matrix."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out), "--device", "cpu", "--workers", "0"]) == 0
    text = out.read_text()
    assert "not finished" in section(text, "Summary")
    assert "data:image/png;base64," in section(text, "Confusion matrix")
    assert "data:image/png;base64," in section(text, "Reliability")
