"""Components own their options: a method or PEFT module is one new file, its options are
validated through its own dataclass, and old resolved configs still load."""
from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

from tests.engine.test_trainer import tiny_config
from ulfine import registry
from ulfine.config import ConfigError, load_config, save_config
from ulfine.engine.trainer import Trainer
from ulfine.registry import METHODS, PEFT, import_submodules

# A complete SSL method: nothing outside this file is edited to add it.
TOY_METHOD = '''
from dataclasses import dataclass

from torch import Tensor

from ulfine.config import option
from ulfine.methods.base import METHODS, StepOutput, SSLMethod
from ulfine.methods.losses import cross_entropy
from ulfine.models.heads import build_head


@dataclass
class ToyConfig:
    weight: float = option(1.0, range="> 0")  # scales the labeled loss


@METHODS.register("toy", config=ToyConfig)
class Toy(SSLMethod):
    needs_unlabeled = False

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        self.head = build_head(ctx.head, ctx.text_prototypes)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(z)

    def step(self, z_labeled, targets, z_weak, z_strong) -> StepOutput:
        return StepOutput(losses={"sup": self.cfg.options.weight * cross_entropy(self.head(z_labeled), targets)})
'''

# A complete PEFT module: a learned bias on the ViT's output tokens.
TOY_PEFT = '''
from dataclasses import dataclass

import torch
from torch import nn

from ulfine.config import option
from ulfine.models.peft.base import PEFT, residual_blocks, width


@dataclass
class ShiftConfig:
    init: float = option(0.0, range=">= 0")  # initial value of the shift


class Shift(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.full((dim,), init))

    def add(self, module, args, output):
        return output + self.shift


@PEFT.register("shift", config=ShiftConfig)
def attach(visual: nn.Module, cfg: ShiftConfig) -> nn.Module:
    residual_blocks(visual)
    visual.transformer.shift = Shift(width(visual), cfg.init)
    visual.transformer.register_forward_hook(visual.transformer.shift.add)
    return visual.transformer.shift
'''


@pytest.fixture
def new_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Drops ``source`` as one new module into a component package (via an extra folder on its
    ``__path__``) and re-runs the package's own discovery; undone afterwards."""
    added: list[str] = []
    for reg in (METHODS, PEFT):
        reg.names()  # loaded before the snapshot, so restoring it keeps the built-in entries
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_configs", dict(reg._configs))

    def add(package: str, name: str, source: str) -> None:
        folder = tmp_path / package.replace(".", "_")
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.setattr(sys.modules[package], "__path__", [*sys.modules[package].__path__, str(folder)])
        added.append(f"{package}.{name}")
        import_submodules(package)

    yield add
    for module in added:
        sys.modules.pop(module, None)


def test_a_new_method_is_one_file(new_file, tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    new_file("ulfine.methods", "toy", TOY_METHOD)
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "method.name=toy", "method.toy.weight=0.5",
                      "optim.iterations=2", "train.eval_every=2")
    assert cfg.method.options.weight == 0.5
    result = Trainer(cfg).fit()
    assert result["iterations"] == 2
    saved = yaml.safe_load((cfg.run_dir() / "config.yaml").read_text())
    assert saved["method"]["toy"] == {"weight": 0.5}  # readable, and only the chosen method's options
    assert load_config(cfg.run_dir() / "config.yaml") == cfg
    with pytest.raises(ConfigError, match=r"'method.toy.weight' = -1.0 is out of range: must be > 0"):
        load_config(None, ["method.name=toy", "method.toy.weight=-1"])
    with pytest.raises(ConfigError, match=r"'method.acr' is not an option of method 'toy' \(its options under 'method.toy': weight\)"):
        load_config(None, ["method.name=toy", "method.acr.est_every=3"])


def test_a_new_peft_module_is_one_file(new_file, tiny_clip) -> None:
    from ulfine.models.encoder import build_image_encoder

    new_file("ulfine.models.peft", "shift", TOY_PEFT)
    cfg = load_config(None, ["strategy.peft=shift", "strategy.shift.init=0.5"])
    encoder = build_image_encoder(tiny_clip.visual, cfg.strategy)
    assert encoder.tuned_names == {"visual.transformer.shift.shift"}
    assert torch.all(tiny_clip.visual.transformer.shift.shift == 0.5)
    with pytest.raises(ConfigError, match=r"'strategy.adapter_dim' is not an option of peft 'shift' \(its options under 'strategy.shift': init\)"):
        load_config(None, ["strategy.peft=shift", "strategy.adapter_dim=4"])


@pytest.mark.parametrize("overrides, message", [
    (["strategy.peft=lora", "strategy.adapter_dim=4"],
     r"'strategy.adapter_dim' is not an option of peft 'lora' \(its options under 'strategy.lora': rank, alpha\)"),
    (["strategy.peft=lora", "strategy.adaptformer.dim=4"], r"'strategy.adaptformer' is not an option of peft 'lora'"),
    (["strategy.name=lp", "strategy.lora_rank=4"], r"'strategy.lora_rank' is an option of peft 'lora', which applies only when strategy.name = 'lft'"),
    (["strategy.encoder_lr=0.001"], r"'strategy.encoder_lr' is not an option of strategy 'lft' \(it has no options\)"),
    (["method.name=fixmatch", "method.ulfine.mu=0.1"], r"'method.ulfine' is not an option of method 'fixmatch' \(it has no options\)"),
    (["method.name=ulfine", "head.scale=10"], r"config section 'head' does not apply: method 'ulfine' builds its own heads"),
    (["method.name=acx"], r"'method.name' = 'acx' is not a known method \(did you mean 'acr'\?\)"),
    (["strategy.adapter_dim=4", "strategy.adaptformer.dim=8"], r"'strategy.adapter_dim' and 'strategy.adaptformer.dim' set the same option"),
    (["strategy.adaptformer.dimm=4"], r"unknown config key 'strategy.adaptformer.dimm' \(did you mean 'dim'\?\)"),
])
def test_a_key_the_chosen_component_lacks_is_an_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_component_options_keep_their_keys() -> None:
    """The flat PEFT/FFT keys and the method subsections of existing configs still work."""
    cfg = load_config(None, ["strategy.peft=lora", "strategy.lora_rank=2", "strategy.lora_alpha=4"])
    assert (cfg.strategy.peft_options.rank, cfg.strategy.peft_options.alpha) == (2, 4.0)
    assert load_config(None, ["strategy.lora.rank=2", "strategy.peft=lora"]).strategy.peft_options.rank == 2
    assert load_config(None, ["strategy.name=fft", "strategy.encoder_lr=0.001"]).strategy.options.encoder_lr == 0.001
    assert load_config(None, ["method.name=ulfine", "method.ulfine.mu=0.1"]).method.options.mu == 0.1
    with pytest.raises(ConfigError, match=r"'strategy.vpt.length' = 0 is out of range: must be >= 1"):
        load_config(None, ["strategy.peft=vpt", "strategy.vpt_length=0"])


def test_registries_fill_themselves_on_first_use() -> None:
    assert {"acr", "fixmatch", "fixmatch_la", "supervised", "ulfine"} <= set(METHODS.names())
    assert registry.STRATEGIES.config("fft").__name__ == "FFTConfig"
    assert dataclasses.fields(METHODS.config("fixmatch")) == ()


# config.yaml as the trainer wrote it before components owned their options (abridged to the
# sections that changed): every method's and every PEFT module's options, and head under ULFine.
OLD_CONFIG = {
    "strategy": {"name": "lft", "peft": "lora", "adapter_dim": 64, "adapter_scale": 0.1, "lora_rank": 4,
                 "lora_alpha": 8.0, "vpt_length": 10, "encoder_lr": None},
    "head": {"name": "cosine", "scale": 25.0, "init_from_text": True},
    "method": {"name": "ulfine", "threshold": 0.95, "lambda_u": 1.0, "la_tau": 1.0,
               "acr": {"tau_range": [0.0, 1.0, 2.0], "est_every": 500, "est_start": 0, "pu_momentum": 0.99,
                       "lambda_bal": 1.0, "tau_bal": 2.0, "tau_bal_targets": 2.0},
               "ulfine": {"proto_momentum": 0.9, "pu_momentum": 0.999, "mu": 0.05, "lambda_orth": 1.0,
                          "text_scale": 14.285714285714285, "paf": True, "orth": False, "fusion": "dual",
                          "lp_loss": "la", "train_text_prototypes": True, "lp_init": "text",
                          "fuse_text_weight": 1.0, "text_loss": "ce"}},
}


def test_an_old_resolved_config_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(OLD_CONFIG))
    cfg = load_config(path, ["optim.iterations=3"])
    assert (cfg.strategy.peft, cfg.strategy.peft_options.rank) == ("lora", 4)
    assert (cfg.method.options.mu, cfg.method.options.orth) == (0.05, False)
    save_config(cfg, tmp_path / "new.yaml")
    new = yaml.safe_load((tmp_path / "new.yaml").read_text())
    assert new["strategy"] == {"name": "lft", "peft": "lora", "lora": {"rank": 4, "alpha": 8.0}}
    assert "acr" not in new["method"] and "head" not in new
    assert load_config(tmp_path / "new.yaml") == cfg


def test_an_old_config_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    broken = {**OLD_CONFIG, "method": {**OLD_CONFIG["method"], "ulfine": {"mu": 0.1, "gone": 1}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError, match=r"written by an older ulfine\) cannot be read: unknown config key 'method.ulfine.gone'"):
        load_config(path)


def as_old_layout(tree: dict) -> dict:
    """A resolved config of today -> the layout the trainer wrote before (all options, flat PEFT keys)."""
    old = yaml.safe_load(yaml.safe_dump(tree))
    old["strategy"] = {**{k: v for k, v in OLD_CONFIG["strategy"].items() if k not in ("name", "peft")},
                       "name": old["strategy"]["name"], "peft": old["strategy"]["peft"],
                       "adapter_dim": old["strategy"]["adaptformer"]["dim"],
                       "adapter_scale": old["strategy"]["adaptformer"]["scale"]}
    old["method"] = {**old["method"], "acr": OLD_CONFIG["method"]["acr"], "ulfine": OLD_CONFIG["method"]["ulfine"]}
    return old


def test_an_old_run_folder_loads_and_resumes(tiny_run: Path, tmp_path: Path) -> None:
    """api.load_run and resume read config.yaml / the checkpoint's config in the old layout."""
    import shutil

    from ulfine.api import load_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(as_old_layout(config)))
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    checkpoint["config"] = as_old_layout(checkpoint["config"])
    torch.save(checkpoint, run / "checkpoints" / "last.pt")

    images = torch.rand(4, 3, 32, 32)
    assert torch.equal(load_run(run).predict(images), load_run(tiny_run).predict(images))
    cfg = load_config(run / "config.yaml", ["output.resume=true", f"output.dir={tmp_path}", "output.name=run"])
    assert cfg.strategy.peft_options.dim == 4
    assert Trainer(cfg).fit()["iterations"] == 2  # already finished: resumes, checks the config, stops
