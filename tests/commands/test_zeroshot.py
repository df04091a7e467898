"""`ulfine zeroshot`: --config and key=value overrides like every other command, or --model/--data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ulfine.cli import main

DATA_KEYS = ["data.dataset=imagefolder", "data.n1=8", "data.m1=8", "data.gamma_l=2", "data.gamma_u=2",
             "data.num_workers=0", "data.eval_batch_size=16", "train.device=cpu"]


def test_config_and_folder_flags_measure_the_same(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": f"local-dir:{tiny_clip_dir}"}}))
    by_config, by_flags = tmp_path / "config.json", tmp_path / "flags.json"
    assert main(["zeroshot", "--config", str(config), "--json", str(by_config),
                 f"data.root={tiny_folder}", *DATA_KEYS]) == 0
    assert main(["zeroshot", "--model", f"local-dir:{tiny_clip_dir}", "--data", str(tiny_folder), "--workers", "0",
                 "--json", str(by_flags)]) == 0
    config_result, flags_result = json.loads(by_config.read_text()), json.loads(by_flags.read_text())
    assert config_result["num_images"] == flags_result["num_images"] == 12
    assert config_result["per_class"] == flags_result["per_class"]
    assert config_result["top1"] == flags_result["top1"]


def test_overrides_alone_are_a_config(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "zs.json"
    assert main(["zeroshot", f"model.name=local-dir:{tiny_clip_dir}", f"data.root={tiny_folder}", *DATA_KEYS,
                 "model.templates=simple", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["per_class"]) == {"cat", "dog", "ship"}


@pytest.mark.parametrize("argv, culprits", [
    (["zeroshot", "data.root=x", "--model", "m", "--batch-size", "8"], ["--model -> model.name=", "data.eval_batch_size"]),
    (["zeroshot"], ["--config", "--model and --data"]),
    (["zeroshot", "method.nmae=acr"], ["method.nmae"]),
])
def test_bad_arguments_name_the_fix(argv: list[str], culprits: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(["--log-level", "WARNING", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for culprit in culprits:
        assert culprit in err, err
