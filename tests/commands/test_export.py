"""`ulfine export`: the tuned part alone, reloaded onto its base model with identical predictions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import make_tiny_clip, save_local_dir
from ulfine.api import BaseModelMismatchError, load_run
from ulfine.cli import main


@pytest.fixture(scope="module")
def export_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "exp"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    return out


def test_export_holds_only_the_tuned_part(export_dir: Path, tiny_run: Path) -> None:
    meta = json.loads((export_dir / "export.json").read_text())
    assert meta["class_names"] == ["cat", "dog", "ship"]
    assert meta["base_model"]["name"].startswith("local-dir:") and len(meta["base_model"]["sha256"]) == 64
    assert meta["preprocess"]["mean"] == [0.5, 0.4, 0.3]  # save_local_dir's preprocess config
    keys = load_file(export_dir / "weights.safetensors").keys()
    assert any(k.startswith("encoder.") and "adapter" in k for k in keys)
    assert any(k.startswith("method.") for k in keys)
    assert not any(k.endswith("attn.in_proj_weight") for k in keys)  # frozen base weights stay out


def test_export_reloads_to_identical_predictions(export_dir: Path, tiny_run: Path) -> None:
    images = torch.rand(6, 3, 32, 32)
    from_run, from_export = load_run(tiny_run), load_run(export_dir)
    assert from_export.class_names == from_run.class_names
    assert torch.equal(from_run.predict(images), from_export.predict(images))


def test_mismatched_base_model_is_an_error(export_dir: Path, tmp_path: Path) -> None:
    other = save_local_dir(make_tiny_clip(seed=1), tmp_path / "other-clip")
    with pytest.raises(BaseModelMismatchError, match="sha256") as info:
        load_run(export_dir, model_name=f"local-dir:{other}")
    recorded = json.loads((export_dir / "export.json").read_text())["base_model"]
    assert recorded["sha256"] in str(info.value) and recorded["name"] in str(info.value)
    assert str(other) in str(info.value)


def test_export_records_an_absolute_base_path(export_dir: Path) -> None:
    name = json.loads((export_dir / "export.json").read_text())["base_model"]["name"]
    assert Path(name.removeprefix("local-dir:")).is_absolute()


def test_ema_run_loads_its_ema_weights(tiny_run: Path, tmp_path: Path) -> None:
    """With weight EMA the run was evaluated with the EMA weights; load_run must use those."""
    from ulfine.config import load_config
    from ulfine.engine.trainer import Trainer

    cfg = load_config(tiny_run / "config.yaml", ["optim.ema=0.5", "train.eval_every=100",
                                                 f"output.dir={tmp_path}", "output.name=ema"])
    trainer = Trainer(cfg)
    trainer.fit()
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():  # the same (fused) attention path as inference
        expected = trainer.eval_module().eval().predict(images)
        assert not torch.equal(expected, trainer.learner.eval().predict(images))
    assert torch.equal(load_run(cfg.run_dir()).logits(images), expected)
