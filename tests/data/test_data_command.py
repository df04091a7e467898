"""`ulfine data`: table, JSON and plot; the spec counts on the shared CIFAR-10 folders."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ulfine.commands.data import run


def run_data(tmp_path: Path, overrides: list[str]) -> dict:
    out = tmp_path / "counts.json"
    run(argparse.Namespace(config=None, overrides=overrides, json=str(out), plot=None))
    assert out.with_suffix(".png").stat().st_size > 1000
    return json.loads(out.read_text())


def test_command_writes_counts_and_plot(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    overrides = [f"data.root={tree}", "data.dataset=imagefolder", "data.n1=4", "data.m1=6",
                 "data.gamma_l=4", "data.gamma_u=4", "data.distribution=reversed"]
    record = run_data(tmp_path, overrides)
    assert record == {"class_names": ["a", "b", "c"], "labeled_counts": [4, 2, 1],
                      "unlabeled_counts": [1, 3, 6], "val_counts": [0, 0, 0], "test_counts": [2, 2, 2],
                      "groups": {"head": [0], "medium": [1], "tail": [2]}}
    assert "total" in capsys.readouterr().out


SPEC = {  # (n1, m1, distribution) -> (labeled, unlabeled), CIFAR-10, gamma_l = 100
    (500, 4000, "consistent"): ([500, 299, 179, 107, 64, 38, 23, 13, 8, 5],
                                [4000, 2397, 1437, 861, 516, 309, 185, 111, 66, 40]),
    (500, 4000, "uniform"): ([500, 299, 179, 107, 64, 38, 23, 13, 8, 5], [4000] * 10),
    (1500, 3000, "reversed"): ([1500, 899, 539, 323, 193, 116, 69, 41, 25, 15],
                               [30, 50, 83, 139, 232, 387, 646, 1078, 1798, 3000]),
}


@pytest.mark.shared
@pytest.mark.parametrize("setting", sorted(SPEC))
def test_shared_cifar10_counts(setting: tuple, cifar10_dir: Path, tmp_path: Path) -> None:
    n1, m1, distribution = setting
    record = run_data(tmp_path, [f"data.root={cifar10_dir}", "data.dataset=cifar10", f"data.n1={n1}",
                                 f"data.m1={m1}", f"data.distribution={distribution}"])
    assert (record["labeled_counts"], record["unlabeled_counts"]) == SPEC[setting]
    assert record["class_names"][0] == "airplane" and record["test_counts"] == [1000] * 10


def test_plot_without_json_goes_to_the_output_folder(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = [f"data.root={tree}", "data.dataset=imagefolder", "data.n1=4", "data.m1=6",
                 "data.gamma_l=4", "data.gamma_u=4", f"output.dir={tmp_path / 'out'}"]
    run(argparse.Namespace(config=None, overrides=overrides, json=None, plot=None))
    assert (tmp_path / "out" / "data_distribution.png").is_file()
    assert not (tmp_path / "data_distribution.png").exists()
    assert f"plot: {tmp_path / 'out' / 'data_distribution.png'}" in capsys.readouterr().out
