"""bench/curves.py end to end on a tiny CLIP: runs a cell, skips it when finished, draws the figure."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.scripts import load_script


@pytest.fixture(scope="module")
def curves():
    return load_script("curves")


@pytest.mark.slow
def test_tiny_schedule_end_to_end(curves, tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "base.yaml"
    config.write_text("\n".join([
        f"model: {{name: 'local-dir:{tiny_clip_dir}', pretrained: null}}",
        f"data: {{dataset: imagefolder, root: '{tiny_folder}', n1: 8, m1: 8, gamma_l: 2, gamma_u: 2,"
        " batch_size: 4, num_workers: 0, eval_batch_size: 16}",
        "method: {threshold: 0.34}",
        "optim: {warmup_iterations: 1}",
        "train: {precision: fp32, device: cpu, log_every: 1}",
    ]))
    monkeypatch.setattr(curves.compare, "RESULTS", tmp_path / "results")
    argv = ["--iterations", "4", "--eval-every", "2", "--cells", "lp-fixmatch", "--out", str(tmp_path / "runs"),
            "--config", str(config), "--tag", "tiny"]
    assert curves.main(argv) == 0
    run = tmp_path / "runs" / "consistent" / "lp-fixmatch" / "s0"
    records = curves.evaluation_records(run)
    assert [r["iteration"] for r in records] == [2, 4]
    for record in records:
        assert record["test"]["class_mean"] is not None
        assert {"mask_rate", "pseudo_accuracy", "mean_confidence_wrong"} <= set(record["pseudo"])
    assert (tmp_path / "results" / "curves-tiny.png").stat().st_size > 0
    table = (tmp_path / "results" / "curves-tiny.md").read_text()
    assert "test class-mean top-1" in table and "| lp-fixmatch (1) |" in table
    launches = (run / "provenance.jsonl").read_text().splitlines()
    assert curves.main(argv) == 0  # finished: kept, not retrained
    assert (run / "provenance.jsonl").read_text().splitlines() == launches
    assert json.loads(launches[0])["command"].count("train.eval_every=2") == 1
