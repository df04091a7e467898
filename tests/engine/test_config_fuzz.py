"""Random small configurations on a tiny CLIP and synthetic images: each one trains two steps
and evaluates, or fails with a clear error naming a config key; never anything else."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.conftest import make_image_folder, make_tiny_clip, save_local_dir
from ulfine.config import ConfigError, load_config
from ulfine.data import DISTRIBUTIONS
from ulfine.engine.trainer import NonFiniteLossError, Trainer
from ulfine.methods.base import METHODS
from ulfine.models.heads import HEADS
from ulfine.models.peft import PEFT

pytestmark = pytest.mark.slow

NAMES_A_KEY = re.compile(r"\b(model|data|strategy|head|method|optim|train|output)\.\w+")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tiny CLIP folder, 3 classes x 24 train / 4 test images), built once for all examples."""
    root = tmp_path_factory.mktemp("fuzz")
    return (save_local_dir(make_tiny_clip(), root / "clip"),
            make_image_folder(root / "data", ["cat", "dog", "ship"], {"train": 24, "test": 4}))


valid = st.fixed_dictionaries({
    "strategy.name": st.sampled_from(["zeroshot", "lp", "lft", "fft"]),
    "strategy.peft": st.sampled_from(PEFT.names()),
    "head.name": st.sampled_from(HEADS.names()),
    "method.name": st.sampled_from(METHODS.names()),
    "method.threshold": st.sampled_from([0.3, 0.95, 1.0]),
    "method.ulfine.lp_head": st.sampled_from(["linear", "cosine"]),
    "method.ulfine.paf_mode": st.sampled_from(["literal", "centred"]),
    "method.ulfine.fusion_scale": st.sampled_from([1.0, 0.5]),
    "data.n1": st.integers(3, 10),
    "data.m1": st.integers(0, 12),
    "data.gamma_l": st.sampled_from([1.0, 2.0, 3.0]),
    "data.gamma_u": st.sampled_from([1.0, 3.0]),
    "data.distribution": st.sampled_from(DISTRIBUTIONS.names()),
    "data.labeled_in_unlabeled": st.booleans(),
    "data.val_per_class": st.integers(0, 2),
    "data.val_source": st.sampled_from(["labeled", "unused"]),
    "data.batch_size": st.integers(1, 6),
    "data.uratio": st.integers(1, 3),
    "optim.grad_accum": st.integers(1, 3),
    "optim.ema": st.sampled_from([0.0, 0.9]),
    "train.precision": st.sampled_from(["fp32", "bf16"]),
})
# about one example in three or four gets one value the data or the ranges cannot take
breakage = st.sampled_from([{}] * 14 + [
    {"method.threshold": 0.0}, {"method.threshold": 1.5}, {"data.uratio": 0}, {"optim.lr": -0.1},
    {"data.n1": 30}, {"data.gamma_l": 100.0},
])
configs = st.builds(lambda drawn, broken: {**drawn, **broken}, valid, breakage)


def overrides(assets: tuple[Path, Path], out: Path, drawn: dict[str, Any]) -> list[str]:
    clip_dir, data_dir = assets
    iterations = 0 if drawn["strategy.name"] == "zeroshot" else 2
    return [
        f"model.name=local-dir:{clip_dir}", "data.dataset=imagefolder", f"data.root={data_dir}",
        "data.num_workers=0", "data.eval_batch_size=16", f"optim.iterations={iterations}",
        "optim.warmup_iterations=1", *small_peft(drawn),
        "train.device=cpu", "train.eval_every=100", "train.log_every=1", f"output.dir={out}",
        "output.name=run", "output.tensorboard=false",
        *(f"{k}={v}" for k, v in drawn.items() if applies(k, drawn)),
    ]


def small_peft(drawn: dict[str, Any]) -> list[str]:
    """A small module of the drawn kind; its keys are an error outside strategy.name=lft."""
    if drawn["strategy.name"] != "lft":
        return []
    return {"adaptformer": ["strategy.adapter_dim=4"], "lora": ["strategy.lora_rank=2"],
            "vpt": ["strategy.vpt_length=2"]}.get(drawn["strategy.peft"], [])


def applies(key: str, drawn: dict[str, Any]) -> bool:
    """head.* is an error under a method that builds its own heads (ULFine)."""
    return not key.startswith("head.") or getattr(METHODS.config(drawn["method.name"]), "uses_head", True)


@settings(max_examples=25, deadline=None, database=None)
@given(drawn=configs)
def test_random_configs_train_or_fail_naming_a_key(assets: tuple[Path, Path], drawn: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as out:
        try:
            cfg = load_config(None, overrides(assets, Path(out), drawn))
            result = Trainer(cfg).fit()
        except ConfigError as err:
            event(f"config error: {str(err)[:60]}")
            return  # names the key by construction (tests/test_config.py)
        except (ValueError, NonFiniteLossError) as err:  # DatasetError and SplitError included
            assert NAMES_A_KEY.search(str(err)), f"error names no config key: {err!r}"
            event(f"{type(err).__name__}: {str(err)[:60]}")
            return
    event("trained")
    assert result["iterations"] == cfg.optim.iterations
    assert len(result["per_class"]) == 3
