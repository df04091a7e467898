"""`ulfine analyze` and the comparison-table aggregation on hand-made run folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ulfine.cli import main
from ulfine.config import load_config
from ulfine.methods.base import METHODS, MethodContext, build_method
from ulfine.methods.ulfine import ULFineConfig
from ulfine.reports.analysis import comparison_table, load_run, mean_std, per_seed_table, run_label, write_analysis

CLASSES = ["cat", "dog", "ship"]


def _pseudo(passed: list[int], wrong: list[int], accuracy: float | None, mask_rate: float | None,
            conf_wrong: float | None) -> dict:
    return {"seen": 100, "mask_rate": mask_rate, "passed": passed, "passed_wrong": wrong,
            "passed_known": passed, "pseudo_accuracy": accuracy, "mean_confidence_correct": 0.97,
            "mean_confidence_wrong": conf_wrong}


def _calibration(ece: float) -> dict:
    return {"ece": ece, "bin_edges": [0.0, 0.5, 1.0], "bin_count": [2.0, 8.0],
            "bin_confidence": [0.4, 0.9], "bin_accuracy": [0.5, 0.7]}


def make_run(root: Path, name: str, strategy: str, method: str, top1: float, pseudo: dict | None = None,
             calibration: dict | None = None, ulfine: dict | None = None, method_state: dict | None = None,
             run_tags: list[str] | None = None) -> Path:
    """A run folder as the trainer writes it, with hand-made numbers."""
    run = root / name
    run.mkdir(parents=True)
    method_cfg = {"name": method, **({"ulfine": ulfine} if ulfine else {})}
    (run / "config.yaml").write_text(yaml.safe_dump({"strategy": {"name": strategy}, "method": method_cfg}))
    metrics = {"top1": top1, "head": top1 + 10, "medium": top1, "tail": top1 - 10,
               "per_class": [top1] * 3, "groups": {"head": [0], "medium": [1], "tail": [2]},
               "train_seconds": 90.0, "iterations": 20, "class_names": CLASSES,
               "labeled_counts": [50, 10, 2], "unlabeled_counts": [400, 80, 16],
               "pseudo_labels": pseudo or {}, "method_state": method_state or {},
               "diagnostics": METHODS.get(method).describe_diagnostics(), "run_tags": run_tags or []}
    if calibration is not None:
        metrics["calibration"] = calibration
    (run / "metrics.json").write_text(json.dumps(metrics))
    records = [{"iteration": 10, "loss/sup": 1.0, "lr": 0.01}]
    if pseudo:
        records.append({"iteration": 10, "test": {"top1": top1 - 5}, "pseudo": pseudo, "method": {}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def _table_row(markdown: str, label: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no table row '{label}' in:\n{markdown}")


def test_analyze_two_runs_writes_table_and_figures(tmp_path: Path) -> None:
    lp = make_run(tmp_path, "a", "lp", "fixmatch", 70.0,
                  _pseudo([30, 20, 10], [12, 8, 6], 60.0, 75.5, 0.81), _calibration(12.5))
    lft = make_run(tmp_path, "b", "lft", "fixmatch", 80.0,
                   _pseudo([40, 20, 4], [3, 2, 1], 90.625, 80.0, 0.975))
    state = {"proto_drift_cos": [1.0, 0.99, 0.9], "proto_visual_cos": [0.3, 0.4, 0.5], "alpha": [0.01, 0.002, 0.0]}
    ulf = make_run(tmp_path, "c", "lft", "ulfine", 85.0, _pseudo([40, 20, 4], [3, 2, 1], 90.0, 80.0, 0.7),
                   method_state=state)
    out = tmp_path / "analysis"
    assert main(["analyze", str(lp), str(lft), str(ulf), "--out", str(out)]) == 0

    text = (out / "analysis.md").read_text()
    # run | strategy | method | top1 | head | medium | tail | ECE | pseudo acc | mask rate | wrong conf | train min
    assert _table_row(text, "lp/fixmatch")[1:] == [
        "lp", "fixmatch", "70.00", "80.00", "70.00", "60.00", "12.50", "60.00", "75.50", "0.810", "1.50"]
    assert _table_row(text, "lft/fixmatch")[3:] == [
        "80.00", "90.00", "80.00", "70.00", "n/a", "90.62", "80.00", "0.975", "1.50"]
    assert _table_row(text, "ship")[1:] == ["2", "6 / 10", "1 / 4", "1 / 4"]
    assert _table_row(text, "(unlabeled seen)")[2:] == ["100", "100", "100"]  # the counts' window
    for png in ("group_accuracy.png", "per_class_accuracy.png", "pseudo_labels.png", "pseudo_curves.png",
                "method_diagnostics.png", "reliability.png"):
        assert f"]({png})" in text
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_without_pseudo_labels_or_calibration_notes_missing_figures(tmp_path: Path) -> None:
    none_seen = {**_pseudo([0, 0, 0], [0, 0, 0], None, None, None), "seen": 0}  # what zero-shot writes
    zero = make_run(tmp_path, "zs", "zeroshot", "fixmatch", 60.0, none_seen)
    path = write_analysis([load_run(zero)], tmp_path / "out")
    text = path.read_text()
    for absent in ("reliability.png", "pseudo_labels.png", "pseudo_curves.png", "method_diagnostics.png"):
        assert absent not in text and not (tmp_path / "out" / absent).exists()
    assert _table_row(text, "zeroshot/fixmatch")[7:11] == ["n/a"] * 4
    assert _table_row(text, "ship")[2] == "n/a"
    assert (tmp_path / "out" / "group_accuracy.png").is_file()


def test_labels_from_config_ablation_tags_and_folder_fallback(tmp_path: Path) -> None:
    """The method names its ablation tags (metrics.json's run_tags); the label only joins them."""
    cfg = load_config(None, ["method.name=ulfine", "method.ulfine.paf=false", "method.ulfine.orth=true",
                             "method.ulfine.fusion=text"])
    method = build_method(cfg.method, MethodContext(3, torch.nn.functional.normalize(torch.randn(3, 8), dim=-1),
                                                    torch.tensor([5.0, 3.0, 1.0])))
    ablated = make_run(tmp_path, "x", "lft", "ulfine", 80.0, run_tags=method.run_tags())
    assert run_label(load_run(ablated)) == "lft/ulfine (no PAF) (text only)"
    # issue 13's options are tagged when they differ from ULFineConfig's defaults, whatever those are
    defaults = ULFineConfig()
    flipped = {"lp_head": "cosine" if defaults.lp_head == "linear" else "linear",
               "paf_mode": "centred" if defaults.paf_mode == "literal" else "literal"}
    cfg = load_config(None, ["method.name=ulfine", *(f"method.ulfine.{k}={v}" for k, v in flipped.items()),
                             f"method.ulfine.fusion_scale={defaults.fusion_scale}"])
    method = build_method(cfg.method, MethodContext(3, torch.nn.functional.normalize(torch.randn(3, 8), dim=-1),
                                                    torch.tensor([5.0, 3.0, 1.0])))
    revised = make_run(tmp_path, "y", "lp", "ulfine", 80.0, run_tags=method.run_tags())
    assert run_label(load_run(revised)) == f"lp/ulfine ({flipped['lp_head']} LP) ({flipped['paf_mode']} PAF)"
    bare = make_run(tmp_path, "my-run", "lft", "ulfine", 80.0)
    (bare / "config.yaml").unlink()
    assert run_label(load_run(bare)) == "my-run"


def test_same_label_twice_gets_folder_names(tmp_path: Path) -> None:
    runs = [load_run(make_run(tmp_path, f"s{seed}", "lp", "acr", 50.0)) for seed in (0, 1)]
    text = write_analysis(runs, tmp_path / "out").read_text()
    assert _table_row(text, "lp/acr [s0]") and _table_row(text, "lp/acr [s1]")


def test_same_label_in_two_bench_cells_gets_the_cell_name(tmp_path: Path) -> None:
    """bench/compare.py's layout <cell>/s<seed>: two variants of one method share the seed folder
    name, so the label takes as much of the path as tells them apart."""
    runs = [load_run(make_run(tmp_path / cell, "s0", "lp", "acr", 50.0)) for cell in ("lp-acr", "lp-acr-tau1")]
    runs.append(load_run(make_run(tmp_path / "lp-acr", "s1", "lp", "acr", 51.0)))
    text = write_analysis(runs, tmp_path / "out").read_text()
    for label in ("lp/acr [lp-acr/s0]", "lp/acr [lp-acr-tau1/s0]", "lp/acr [lp-acr/s1]"):
        assert _table_row(text, label), label


def test_unfinished_run_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="half"):
        load_run(tmp_path / "half")


def test_mean_std_is_sample_std() -> None:
    assert mean_std([70.0, 74.0]) == (72.0, pytest.approx(2.8284271))
    assert mean_std([5.0]) == (5.0, None)


def test_comparison_table_mean_std_over_seeds() -> None:
    pseudo = {"seen": 200, "mask_rate": 10.0, "pseudo_accuracy": 80.0, "passed_wrong": [1, 3, 0]}
    seeds = [{"top1": 70.0, "head": 90.0, "medium": 70.0, "tail": 50.0, "ece": 10.0, "train_seconds": 60.0,
              "pseudo_labels": pseudo},
             {"top1": 74.0, "head": 92.0, "medium": 70.0, "tail": 56.0, "ece": 20.0, "train_seconds": 180.0,
              "pseudo_labels": {**pseudo, "mask_rate": 20.0, "passed_wrong": [8, 0, 0]}}]
    table = comparison_table({"lp-fixmatch": seeds, "lft-acr": seeds[:1], "fft-acr": [],
                              "zeroshot": [{"top1": 30.0, "pseudo_labels": {}}]})
    assert _table_row(table, "lp-fixmatch")[1:] == [
        "2", "72.00 ± 2.83", "91.00 ± 1.41", "70.00 ± 0.00", "53.00 ± 4.24", "15.00 ± 7.07",
        "15.00 ± 7.07", "80.00 ± 0.00", "3.00 ± 1.41", "2.00 ± 1.41"]
    assert _table_row(table, "lft-acr")[1:] == [
        "1", "70.00", "90.00", "70.00", "50.00", "10.00", "10.00", "80.00", "2.00", "1.00"]
    assert _table_row(table, "fft-acr")[1:] == ["0"] + ["n/a"] * 9
    # a run that made no pseudo-labels (zero-shot) has none to report, not zero
    assert _table_row(table, "zeroshot")[1:] == ["1", "30.00"] + ["n/a"] * 8


def test_comparison_table_shows_validation_only_when_held_out() -> None:
    """Runs with a validation split get a val column first (what settings are chosen on)."""
    seeds = [{"top1": 40.0, "val": {"class_mean": 50.0}}, {"top1": 42.0, "val": {"class_mean": 54.0}}]
    table = comparison_table({"lp-fixmatch-la": seeds, "zeroshot": [{"top1": 30.0}]})
    assert table.splitlines()[0].startswith("| cell | seeds | val class-mean | top1 |")
    assert _table_row(table, "lp-fixmatch-la")[1:4] == ["2", "52.00 ± 2.83", "41.00 ± 1.41"]
    assert _table_row(table, "zeroshot")[1:4] == ["1", "n/a", "30.00"]
    assert "val class-mean" not in comparison_table({"zeroshot": [{"top1": 30.0}]})


def test_per_seed_table_lists_each_run_in_seed_order() -> None:
    runs = {"lp-fixmatch": {1: {"top1": 74.0, "val": {"class_mean": 54.0}}, 0: {"top1": 70.0, "tail": 50.0}},
            "fft-acr": {}}
    table = per_seed_table(runs)
    assert table.splitlines()[0].startswith("| cell | seed | val class-mean | top1 | head |")
    assert _table_row(table, "lp-fixmatch")[1:6] == ["0", "n/a", "70.00", "n/a", "n/a"]
    rows = [line for line in table.splitlines() if line.startswith("| lp-fixmatch |")]
    assert [row.split(" | ")[1:4] for row in rows] == [["0", "n/a", "70.00"], ["1", "54.00", "74.00"]]
    assert "fft-acr" not in table  # a cell without a finished seed has no row


def test_method_diagnostics_come_from_metrics_json(tmp_path: Path) -> None:
    """The figure and the scalar table show what each run's metrics.json lists, with its labels;
    a method the analysis never heard of is drawn the same way."""
    ulf = make_run(tmp_path, "u", "lft", "ulfine", 85.0, method_state={
        "proto_drift_cos": [1.0, 0.99, 0.9], "proto_visual_cos": [0.3, 0.4, 0.5], "alpha": [0.01, 0.002, 0.0],
        "prior_unlabeled": [0.5, 0.3, 0.2], "prior_seen": [0.5, 0.3, 0.2], "orth": 0.125})
    acr = make_run(tmp_path, "a", "lp", "acr", 70.0, method_state={"prior_unlabeled": [0.6, 0.3, 0.1], "tau": 1.5})
    new = make_run(tmp_path, "n", "lp", "fixmatch", 60.0, method_state={"gain": [1.0, 2.0, 3.0]})
    metrics = json.loads((new / "metrics.json").read_text())
    metrics["diagnostics"] = {"title": "Toy: per-class gain",
                              "entries": {"gain": {"label": "gain", "kind": "per_class", "plot": True}}}
    (new / "metrics.json").write_text(json.dumps(metrics))

    text = write_analysis([load_run(ulf), load_run(acr)], tmp_path / "out").read_text()
    assert "## ULFine: text prototypes after PAF" in text and "](method_diagnostics.png)" in text
    scalars = text.split("## Method diagnostics")[1]
    assert _table_row(scalars, "lp/acr")[1:] == ["adaptive tau", "1.5000"]
    assert _table_row(scalars, "lft/ulfine")[1:] == ["L_orth", "0.1250"]
    toy = write_analysis([load_run(new)], tmp_path / "toy").read_text()
    assert "## Toy: per-class gain" in toy and (tmp_path / "toy" / "method_diagnostics.png").is_file()
    only_acr = write_analysis([load_run(acr)], tmp_path / "acr").read_text()
    assert not (tmp_path / "acr" / "method_diagnostics.png").exists() and "## Method diagnostics" in only_acr


def test_pseudo_curves_use_every_training_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One point per logged training window, not only the evaluations (one point per run)."""
    import ulfine.reports.analysis as analysis

    run = make_run(tmp_path, "a", "lft", "fixmatch", 60.0, _pseudo([30, 20, 10], [12, 8, 6], 60.0, 75.5, 0.81))
    windows = [{"iteration": it, "loss/sup": 1.0, "pseudo_train": {"seen": 64, "mask_rate": 10.0 + it,
                                                                    "pseudo_accuracy": 50.0 + it,
                                                                    "mean_confidence_wrong": 0.9}}
               for it in (2, 4, 6, 8)]
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in windows))
    drawn: list[tuple[list[int], str]] = []
    real_curves = analysis.curves

    def spy(ax, records, keys, **kwargs):  # type: ignore[no-untyped-def]
        drawn.extend((analysis.series(records, key)[0], key) for key in keys.values())
        real_curves(ax, records, keys, **kwargs)

    monkeypatch.setattr(analysis, "curves", spy)
    assert analysis.plot_pseudo_curves([load_run(run)], tmp_path / "curves.png") is not None
    assert ([2, 4, 6, 8], "pseudo_train/pseudo_accuracy") in drawn
