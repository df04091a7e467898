"""The paper's model, CLIP ViT-B/16 at 224 px (random weights: open_clip's `ViT-B-16` without a
pretrained tag, so no network), run from configs/cifar10_lt.yaml on miniature CIFAR-10 pickles:
AdaptFormer on all 12 blocks, step 0 equals the frozen model, checkpoint + resume is exact."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.data.formats import skip_md5, write_cifar10  # noqa: F401  (fixture)
from tests.engine.test_trainer import assert_same_state, trained_state
from ulfine.config import RunConfig, load_config
from ulfine.engine import checkpoint as ckpt
from ulfine.engine.trainer import Trainer
from ulfine.models.foundation import load_foundation
from ulfine.models.peft import residual_blocks
from ulfine.models.peft.adaptformer import AdaptFormer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cifar10_lt.yaml"


def vit_config(data: Path, out: Path, method: str, *overrides: str) -> RunConfig:
    """The paper's config, cut to 4 LFT steps of 2 labeled + 2 unlabeled images, 10 test images."""
    return load_config(CONFIG, [
        "model.pretrained=null", f"data.root={data}", "data.download=false", "data.n1=2", "data.m1=2",
        "data.gamma_l=2", "data.gamma_u=2", "data.batch_size=2", "data.uratio=1", "data.num_workers=0",
        "data.eval_batch_size=10", "optim.iterations=4", "optim.warmup_iterations=1", "train.precision=fp32",
        "train.device=cpu", "train.eval_every=100", "train.log_every=1", "train.checkpoint_every=2",
        "method.threshold=0.1", f"method.name={method}", f"output.dir={out}", "output.tensorboard=false",
        *(["method.acr.est_every=2"] if method == "acr" else []), *overrides,
    ])


def vit_trainer(cfg: RunConfig) -> tuple[Trainer, torch.nn.Module]:
    """The Trainer, plus a copy of the ViT before any adapter was attached (the frozen model)."""
    ckpt.seed_everything(cfg.train.seed)  # as Trainer does: same random weights in every run
    foundation = load_foundation(cfg.model)
    frozen = copy.deepcopy(foundation.visual)
    return Trainer(cfg, foundation=foundation), frozen


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ulfine", "acr"])
def test_vit_b16_end_to_end(method: str, tmp_path: Path, skip_md5: None) -> None:
    data = tmp_path / "cifar10"
    write_cifar10(data, [4] * 10, [1] * 10)
    straight, frozen = vit_trainer(vit_config(data, tmp_path / "a", method))
    assert straight.foundation.preprocess_cfg["size"] == (224, 224)

    visual = straight.learner.encoder.visual
    blocks = residual_blocks(visual)
    assert len(blocks) == 12
    assert [sum(isinstance(m, AdaptFormer) for m in block.modules()) for block in blocks] == [1] * 12
    tuned = straight.learner.encoder.tuned_names
    assert all(any(name.startswith(f"visual.transformer.resblocks.{i}.") for name in tuned) for i in range(12))
    assert all(name.startswith("visual.transformer.resblocks.") for name in tuned)

    images = torch.stack([straight.data.test[i]["image"] for i in range(2)])
    assert images.shape == (2, 3, 224, 224)
    with torch.no_grad():  # step 0: the adapters add exactly nothing
        torch.testing.assert_close(straight.learner.encoder(images),
                                   torch.nn.functional.normalize(frozen(images), dim=-1), rtol=1e-5, atol=1e-6)
    del frozen

    initial = trained_state(straight)
    result = straight.fit()
    assert result["iterations"] == 4 and len(result["per_class"]) == 10
    run = tmp_path / "a" / straight.cfg.run_dir().name
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "metrics.json").is_file()
    expected = trained_state(straight)
    changed = {k for k in expected if not torch.equal(expected[k], initial[k])}
    assert changed & {f"encoder.{name}" for name in tuned}, "the adapters trained"
    del straight

    interrupted, _ = vit_trainer(vit_config(data, tmp_path / "b", method))
    assert interrupted.fit(until=2) == {}
    del interrupted
    resumed, _ = vit_trainer(vit_config(data, tmp_path / "b", method, "output.resume=true"))
    steps: list[int] = []
    train_step = resumed.train_step
    resumed.train_step = lambda: (steps.append(1), train_step())[1]  # type: ignore[method-assign]
    resumed.fit()
    assert resumed.state.iteration == 4 and len(steps) == 2  # continued from the step-2 checkpoint
    assert_same_state(expected, trained_state(resumed))
