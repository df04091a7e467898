"""bench/cost.py: cell commands and the cost ratios from learning curves, without training."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.scripts import load_script
from ulfine.config import load_config


@pytest.fixture(scope="module")
def cost():
    return load_script("cost")


def test_every_cell_command_is_a_valid_config(cost, tmp_path: Path) -> None:
    for cell, spec in cost.CELL_SPECS.items():
        command = cost.CostJob(cell, 0).command(tmp_path, 40, 4, [])
        overrides = command[command.index(str(spec.config)) + 1:]
        cfg = load_config(spec.config, overrides)
        assert cfg.train.eval_every == 10 and cfg.optim.iterations == 40
        assert (cfg.strategy.name == "scratch") == spec.scratch
        if cell.startswith("lp"):
            assert not cfg.train.feature_cache  # the LP cost is its own steps' cost


def _records(points: list[tuple[float, float, float]]) -> list[dict]:
    return [{"iteration": i, "test": {"top1": acc, "class_mean": acc},
             "cost": {"train_flops": flops, "train_seconds": secs, "images_seen": i}}
            for i, (flops, secs, acc) in enumerate(points)] + [{"iteration": 99, "loss/sup": 1.0}]


def test_curve_reach_and_interpolation(cost) -> None:
    points = cost.curve(_records([(10, 1, 20), (100, 10, 40), (1000, 100, 60)]))
    assert len(points) == 3
    assert cost.cost_to_reach(points, 40) == 100 and cost.cost_to_reach(points, 61) is None
    assert cost.accuracy_at(points, 10 ** 1.5) == pytest.approx(30)  # halfway in log cost
    assert cost.accuracy_at(points, 1000) == 60
    assert cost.accuracy_at(points, 2000) is None and cost.accuracy_at(points, 5) is None  # no extrapolation


def test_summary_ratios(cost) -> None:
    curves = {
        "ulfine": cost.curve(_records([(50, 5, 30), (100, 10, 50)])),
        "scratch-fixmatch-la": cost.curve(_records([(100, 10, 20), (400, 40, 55), (2000, 200, 60)])),
        "scratch-acr": cost.curve(_records([(100, 10, 20), (2000, 200, 40)])),
        "fft-acr": cost.curve(_records([(100, 10, 25), (200, 20, 35)])),
    }
    summary = cost.summarise(curves)
    fixmatch = summary["scratch"]["scratch-fixmatch-la"]
    assert fixmatch["cost_ratio_flops"] == 4.0 and fixmatch["cost_ratio_seconds"] == 4.0
    acr = summary["scratch"]["scratch-acr"]
    assert acr["cost_ratio_flops"] is None
    assert acr["accuracy_at_10x_flops"] == pytest.approx(20 + 20 * (3 - 2) / (3.30103 - 2), rel=1e-6)
    fft = summary["fft_vs_scratch"]["fft-acr"]
    assert fft["scratch_cell"] == "scratch-acr"
    # equal cost = FFT's final 200 FLOPs (the shorter curve): FFT's own 35, scratch interpolated
    assert fft["equal_flops"] == 200 and fft["fft_accuracy_at_equal_flops"] == 35
    assert fft["scratch_accuracy_at_equal_flops"] == pytest.approx(20 + 20 * (2.30103 - 2) / (3.30103 - 2), rel=1e-5)
