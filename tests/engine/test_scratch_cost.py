"""strategy=scratch (no foundation model, BatchNorm backbone in one joint forward) and the cost
accounting of every run (images seen, training FLOPs, seconds; resumable)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ulfine.config import ConfigError, load_config
from ulfine.data import build_ltssl_data
from ulfine.data.transforms import native_preprocess_cfg
from ulfine.engine.trainer import Trainer
from ulfine.models.backbones import BACKBONES
from ulfine.models.backbones.wrn import WideResNet
from tests.engine.test_trainer import tiny_config

if "wrn10_1" not in BACKBONES:
    BACKBONES.register("wrn10_1")(lambda: WideResNet(depth=10, widen=1))  # a fast stand-in for tests


def scratch_trainer(tiny_folder: Path, out: Path, *overrides: str) -> Trainer:
    cfg = tiny_config(Path("/nonexistent/model"), tiny_folder, out, "strategy.name=scratch",
                      "strategy.backbone=wrn10_1", *overrides)
    return Trainer(cfg, data=build_ltssl_data(cfg.data, native_preprocess_cfg("cifar10")))


@pytest.mark.parametrize("method", ["supervised", "fixmatch", "fixmatch_la", "acr"])
def test_scratch_trains_without_a_foundation_model(method: str, tiny_folder: Path, tmp_path: Path) -> None:
    trainer = scratch_trainer(tiny_folder, tmp_path / "runs", f"method.name={method}", "optim.iterations=2",
                              "output.name=run")
    assert trainer.foundation is None and getattr(trainer.learner.method, "text_prototypes", None) is None
    heads = [m for m in trainer.learner.method.modules() if isinstance(m, nn.Linear)]
    assert heads and all(h.weight.shape[1] == 64 for h in heads)  # WRN-10-1 features, linear heads
    result = trainer.fit()
    unlabeled = 0 if method == "supervised" else 2 * 4
    assert result["images_seen"] == 2 * (4 + unlabeled)
    assert result["train_flops"] > 0 and result["train_seconds"] > 0
    assert trainer.data.test[0]["image"].shape == (3, 32, 32)


def test_scratch_needs_native_statistics_and_refuses_ulfine(tiny_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(Path("/nonexistent/model"), tiny_folder, tmp_path, "strategy.name=scratch")
    with pytest.raises(ConfigError, match="native resolution"):
        Trainer(cfg)  # imagefolder: no native size known; and no model load was tried
    with pytest.raises(ConfigError, match="text prototypes"):
        tiny_config(Path("/x"), tiny_folder, tmp_path, "strategy.name=scratch", "method.name=ulfine")


def test_scratch_runs_all_views_in_one_forward(tiny_folder: Path, tmp_path: Path) -> None:
    """BatchNorm: one forward per step over labeled + weak + strong (FixMatch's), so running
    statistics move once per step and batch statistics span the whole step."""
    trainer = scratch_trainer(tiny_folder, tmp_path, "method.name=fixmatch", "optim.iterations=3")
    norm = next(m for m in trainer.learner.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    trainer.fit(until=2)
    assert int(norm.num_batches_tracked) == 2
    assert trainer.learner.encoded == {"grad": 4 + 8 + 8, "no_grad": 0}


def test_step_flops_match_the_counted_training_step(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    """The per-image model reproduces FlopCounterMode on a real forward + backward (sparse strong
    view on, so the autograd batch has whatever size the pseudo-labels give)."""
    trainer = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path, "strategy.name=lft", "method.name=fixmatch",
                                  "method.threshold=0.3"))
    trainer.fit(until=1)  # measures the per-image costs
    batch = trainer._next_batch()
    with FlopCounterMode(display=False) as counter:
        out = trainer.learner(batch["labeled"], batch["targets"], batch["weak"], batch["strong"])
        sum(out.losses.values()).backward()
    predicted = trainer.flops_per_image.step(views=4 + 8 + 8, **trainer.learner.encoded)
    assert trainer.learner.encoded["no_grad"] == 8
    assert predicted == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_cost_is_recorded_and_survives_resume(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    straight = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "a", "output.name=run")).fit()
    assert Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "b", "output.name=run")).fit(until=4) == {}
    resumed = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "b", "output.name=run",
                                  "output.resume=true")).fit()
    assert resumed["images_seen"] == straight["images_seen"] == 6 * (4 + 8)
    assert resumed["train_flops"] == pytest.approx(straight["train_flops"], rel=1e-9)
    records = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "test" in r]
    assert [r["cost"]["images_seen"] for r in evals] == [3 * 12, 6 * 12]
    assert evals[-1]["cost"]["train_flops"] == resumed["train_flops"]


def test_a_run_killed_after_its_last_checkpoint_still_reports_its_flops(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """Killed while writing metrics.json: the resume runs no step, so the per-image FLOPs come
    from the checkpoint (was: None, which made tests/engine/test_interrupt.py flaky)."""
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path, "output.name=run")
    straight = Trainer(cfg).fit()
    cfg.run_dir().joinpath("metrics.json").unlink()
    resumed = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path, "output.name=run", "output.resume=true")).fit()
    assert resumed["flops_per_image"] == straight["flops_per_image"] is not None


def test_scratch_runs_are_refused_by_load_run_with_a_clear_error(tiny_folder: Path, tmp_path: Path) -> None:
    from ulfine.api import load_run
    from ulfine.commands.export import export_run

    trainer = scratch_trainer(tiny_folder, tmp_path, "method.name=supervised", "optim.iterations=1", "output.name=run")
    trainer.fit()
    for load in (load_run, export_run):
        with pytest.raises(ConfigError, match="scratch run"):
            load(tmp_path / "run")


def test_scratch_ema_copies_batchnorm_statistics(tiny_folder: Path, tmp_path: Path) -> None:
    """As FixMatch's ModelEMA: weights averaged, BatchNorm running statistics copied (an average
    of BN's own slow average would lag far behind it)."""
    trainer = scratch_trainer(tiny_folder, tmp_path, "method.name=fixmatch", "optim.iterations=3", "optim.ema=0.999")
    trainer.fit(until=2)
    ema_encoder = trainer.ema.module.encoder
    for average, current in zip(ema_encoder.buffers(), trainer.learner.encoder.buffers()):
        assert torch.equal(average, current)
    first = next(ema_encoder.parameters())
    assert not torch.equal(first, next(trainer.learner.encoder.parameters()))


@pytest.mark.shared
def test_scratch_on_cifar10_uses_native_size_and_statistics(cifar10_dir: Path, tmp_path: Path) -> None:
    """The offline config with strategy=scratch and a model path that does not exist: nothing
    tries to load it, and the views are 32 px with CIFAR-10's mean / std (not CLIP's)."""
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "offline" / "miniclip_cifar10lt.yaml", [
        "strategy.name=scratch", "method.name=fixmatch_la", "model.name=local-dir:/nonexistent/clip",
        f"data.root={cifar10_dir}", f"output.dir={tmp_path}", "train.device=cpu"])
    trainer = Trainer(cfg)
    image = trainer.data.test[0]["image"]
    assert image.shape == (3, 32, 32)
    normalize = trainer.data.unlabeled.transforms["weak"].transforms[-1]
    assert tuple(normalize.mean) == (0.4914, 0.4822, 0.4465)
