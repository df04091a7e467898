"""Typed run configuration: dataclasses with defaults, loaded from YAML + ``key=value`` overrides.

Converted once at the edge (`load_config`); everything below receives dataclasses. An unknown
key raises with its dotted path and the closest valid key; a value outside its range raises
naming the key and the value.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ulfine.registry import suggest


class ConfigError(ValueError):
    """A config file, key or value the user has to fix."""


@dataclass
class ModelConfig:
    name: str = "ViT-B-16"  # open_clip name, 'local-dir:PATH' or 'hf-hub:ORG/NAME'
    pretrained: str | None = "openai"  # open_clip pretrained tag; ignored for local-dir:/hf-hub:
    checkpoint: str | None = None  # explicit weights file (overrides `pretrained`)
    cache_dir: str | None = None  # where open_clip downloads weights
    templates: str = "single"  # prompt set: single | simple | openai (open_clip's 80 ImageNet templates)
    prompt: str = "a photo of a {}."  # the template used by `templates: single`


@dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | cifar100 | stl10 | smallimagenet127 | imagefolder
    root: str = "data"  # dataset folder (or torchvision download cache)
    download: bool = False  # let torchvision download CIFAR/STL when `root` lacks them
    class_names: str | None = None  # optional names file, one name per line, in class order
    n1: int = 500  # labeled images of the most frequent class (N_1)
    m1: int = 4000  # unlabeled images of the most frequent class (M_1)
    gamma_l: float = 100.0  # labeled imbalance ratio N_1 / N_C
    gamma_u: float = 100.0  # unlabeled imbalance ratio (ignored for `uniform`)
    # consistent | uniform | reversed | middle | headtail (synthetic long tail from n1/m1/gamma), or
    # natural: the data as it is (every train/<class>/ image labeled, all of unlabeled/ unlabeled)
    distribution: str = "consistent"
    test_holdout: float = 0.2  # natural without a test/ folder: share of each class held out as test
    labeled_in_unlabeled: bool = False  # ACR's convention: unlabeled = first N_k + M_k
    selection: Literal["first", "shuffle"] = "first"  # which images of a class are taken
    split_seed: int = 0  # seed of the per-class shuffle (selection=shuffle)
    allow_empty_classes: bool = False  # permit classes with zero labeled images
    val_per_class: int = 0  # labeled images per class held out as a validation split
    batch_size: int = 64  # labeled batch B (global, split across DDP processes)
    uratio: int = 2  # unlabeled batch = uratio * B
    eval_batch_size: int = 256
    num_workers: int = 2
    randaugment_n: int = 2  # RandAugment ops per image (strong view)
    randaugment_m: int = 10  # RandAugment magnitude (strong view)
    cutout: float = 0.5  # Cutout (RandomErasing) area fraction upper bound (strong view); 0 = off
    bad_images: Literal["error", "skip"] = "error"  # corrupt files: fail naming them, or skip with a count


@dataclass
class StrategyConfig:
    name: Literal["zeroshot", "lp", "lft", "fft"] = "lft"
    peft: str = "adaptformer"  # lft module: adaptformer | lora | vpt | bitfit
    adapter_dim: int = 64  # AdaptFormer bottleneck r
    adapter_scale: float = 0.1  # AdaptFormer output scale s
    lora_rank: int = 8
    lora_alpha: float = 8.0
    vpt_length: int = 10  # VPT-deep prompts per block
    encoder_lr: float | None = None  # lr of encoder weights (FFT); None = optim.lr


@dataclass
class HeadConfig:
    name: str = "cosine"  # cosine | linear
    scale: float = 25.0  # cosine-head logit scale (1/T; LIFT uses 25)
    init_from_text: bool = True  # initialise weights from the text prototypes


@dataclass
class ACRConfig:
    # tau for an unlabeled estimate at the (consistent, uniform, reversed) anchor; the pseudo-labels
    # of the standard head come from logits - tau * log(pi_l) (ACR: tau_min = 0 .. tau_max = tau1 = 2)
    tau_range: tuple[float, float, float] = (0.0, 1.0, 2.0)
    est_every: int = 500  # re-estimate tau every N iterations (ACR: each epoch)
    est_start: int = 0  # iterations before the unlabeled distribution is estimated (ACR: 5 epochs)
    pu_momentum: float = 0.99  # EMA of the unlabeled class distribution (ACR's --ema-u in its README)
    lambda_bal: float = 1.0  # weight of the balanced (logit-adjusted) head's losses
    tau_bal: float = 2.0  # LA strength of the balanced head's labeled loss (ACR: tau2)
    tau_bal_targets: float = 2.0  # prior removed from the standard logits to label the balanced head (ACR: tau12)


@dataclass
class ULFineConfig:
    proto_momentum: float = 0.9  # m: EMA of per-class visual prototypes
    pu_momentum: float = 0.999  # EMA of P_u
    mu: float = 0.01  # PAF step: alpha_k = mu * P_u^k / max_i P_u^i
    lambda_orth: float = 1.0  # weight of L_orth
    text_scale: float = 1 / 0.07  # 1/T_t of the text logits
    paf: bool = True  # ablation: PAF update on/off
    orth: bool = True  # ablation: orthogonality loss on/off
    fusion: Literal["dual", "text", "lp"] = "dual"  # logits used for pseudo-labels and prediction
    lp_loss: Literal["la", "ce_fuse_prior"] = "la"  # how s_l is balanced (spec section 3, DLF)
    train_text_prototypes: bool = True  # C_t gets gradients (text losses, L_orth); False: only PAF moves it
    lp_init: Literal["text", "zeros"] = "text"  # LP head W at step 0: C_t (spec) or zeros (s_l = 0)
    fuse_text_weight: float = 1.0  # beta in the dual fusion s = beta * s_t + s_l (spec: 1)
    text_loss: Literal["ce", "la"] = "ce"  # L_s on s_t: plain CE (spec) or logit-adjusted like s_l


@dataclass
class MethodConfig:
    name: str = "fixmatch"  # supervised | fixmatch | fixmatch_la | acr | ulfine
    threshold: float = 0.95  # confidence threshold for pseudo-labels
    lambda_u: float = 1.0  # weight of the unlabeled loss
    la_tau: float = 1.0  # logit-adjustment strength (Menon et al.)
    acr: ACRConfig = field(default_factory=ACRConfig)
    ulfine: ULFineConfig = field(default_factory=ULFineConfig)


@dataclass
class OptimConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True
    iterations: int = 2000
    warmup_iterations: int = 50
    grad_accum: int = 1  # micro-batches per optimiser step
    grad_clip: float = 0.0  # max grad norm; 0 = off
    ema: float = 0.0  # weight EMA decay; 0 = off (evaluation uses the EMA weights when on)


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    eval_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 500
    compile: bool = False  # torch.compile the encoder
    # autograd forward only for the strong images whose pseudo-label passes (their loss is exact;
    # the others' is 0 anyway); False = every strong image, the reference behaviour
    sparse_strong: bool = True
    feature_cache: bool = True  # LP with a frozen encoder: train heads on cached features
    feature_bank: int = 4  # augmentations per image in the feature cache (K)
    cache_dir: str | None = None  # feature cache folder; None = <output.dir>/.feature_cache


@dataclass
class OutputConfig:
    dir: str = "runs"
    name: str | None = None  # run folder name; default <dataset>-<strategy>-<method>-s<seed>
    resume: bool = False  # continue from <run>/checkpoints/last.pt
    tensorboard: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def run_dir(self) -> Path:
        name = self.output.name or (
            f"{self.data.dataset}-{self.strategy.name}-{self.method.name}-s{self.train.seed}"
        )
        return Path(self.output.dir) / name

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# Range checks: dotted key -> (predicate, description). Checked after every load.
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "method.threshold": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "method.lambda_u": (lambda v: v >= 0, ">= 0"),
    "optim.lr": (lambda v: v > 0, "> 0"),
    "optim.weight_decay": (lambda v: v >= 0, ">= 0"),
    "optim.iterations": (lambda v: v >= 0, ">= 0"),
    "optim.warmup_iterations": (lambda v: v >= 0, ">= 0"),
    "optim.grad_accum": (lambda v: v >= 1, ">= 1"),
    "optim.ema": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "data.uratio": (lambda v: v >= 1, ">= 1"),
    "data.batch_size": (lambda v: v >= 1, ">= 1"),
    "data.eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "data.n1": (lambda v: v >= 1, ">= 1"),
    "data.m1": (lambda v: v >= 0, ">= 0"),
    "data.gamma_l": (lambda v: v >= 1, ">= 1"),
    "data.gamma_u": (lambda v: v >= 1, ">= 1"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.val_per_class": (lambda v: v >= 0, ">= 0"),
    "data.cutout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "data.test_holdout": (lambda v: 0 < v < 1, "in (0, 1)"),
    "strategy.adapter_dim": (lambda v: v >= 1, ">= 1"),
    "strategy.lora_rank": (lambda v: v >= 1, ">= 1"),
    "strategy.vpt_length": (lambda v: v >= 1, ">= 1"),
    "head.scale": (lambda v: v > 0, "> 0"),
    "method.acr.est_every": (lambda v: v >= 1, ">= 1"),
    "method.acr.est_start": (lambda v: v >= 0, ">= 0"),
    "method.acr.pu_momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "method.acr.lambda_bal": (lambda v: v >= 0, ">= 0"),
    "method.ulfine.mu": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "method.ulfine.proto_momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "method.ulfine.pu_momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "method.ulfine.lambda_orth": (lambda v: v >= 0, ">= 0"),
    "method.ulfine.text_scale": (lambda v: v > 0, "> 0"),
    "method.ulfine.fuse_text_weight": (lambda v: v >= 0, ">= 0"),
    "train.eval_every": (lambda v: v >= 1, ">= 1"),
    "train.log_every": (lambda v: v >= 1, ">= 1"),
    "train.checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "train.feature_bank": (lambda v: v >= 1, ">= 1"),
}


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise naming ``key``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(hint, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"config key '{key}' may not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"config key '{key}' = {value!r} is not one of {list(choices)}"
                f"{suggest(str(value), [str(c) for c in choices])}"
            )
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if hint is float:
        number = _as_float(value)
        if number is None:
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}' must be finite, got {value!r}")
        return number
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    return value


def _as_float(value: Any) -> float | None:
    """A number, or a numeric string: YAML 1.1 reads ``1e-3`` (an exponent without a dot) as a string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{suggest(str(key), names)}; "
                f"valid keys under '{prefix.rstrip('.') or 'top level'}': {', '.join(names)}"
            )
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "method.name=acr"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. optim.lr=0.01)")
        _set_dotted(tree, key, yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    base = data.pop("base", None)  # `base: other.yaml` inherits, relative to this file
    if base is not None:
        data = _merge(read_yaml(path.parent / base), data)
    return data


def validate(cfg: RunConfig) -> RunConfig:
    for dotted, (ok, desc) in _RANGES.items():
        value: Any = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        if not ok(value):
            raise ConfigError(f"config key '{dotted}' = {value!r} is out of range: must be {desc}")
    if cfg.strategy.name == "zeroshot" and cfg.optim.iterations != 0:
        raise ConfigError(
            f"strategy.name = 'zeroshot' trains nothing, but optim.iterations = {cfg.optim.iterations}; "
            "set optim.iterations=0 (or use strategy.name=lp to train heads on the frozen encoder)"
        )
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated RunConfig."""
    data = read_yaml(path) if path is not None else {}
    data = _merge(data, parse_overrides(overrides or []))
    return validate(from_dict(RunConfig, data))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` on (or just above) each field line of dataclass ``cls``'s source."""
    import inspect

    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        if line.strip().startswith("#"):
            above.append(line.strip().lstrip("# "))
            continue
        code, _, comment = line.partition("  # ")
        stripped = code.strip()
        name = stripped.split(":", 1)[0] if ":" in stripped else ""
        if name.isidentifier():
            comments[name] = comment.strip() or " ".join(above)
        above = []
    return comments


def config_help(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """``section.key = default  comment`` lines for every config key, from the dataclasses."""
    lines: list[str] = []
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            lines.append(f"{prefix}{f.name}:" if not prefix else f"{prefix}{f.name}.*")
            lines.extend(config_help(type(default), f"{prefix}{f.name}."))
            continue
        text = f"  {prefix}{f.name} = {yaml.safe_dump(to_dict(default), default_flow_style=True).strip()}"
        text = text.removesuffix("\n...").removesuffix(" ...")
        comment = comments.get(f.name, "")
        if typing.get_origin(hints[f.name]) is Literal and "|" not in comment:
            comment = f"{' | '.join(map(str, typing.get_args(hints[f.name])))}{'; ' if comment else ''}{comment}"
        lines.append(f"{text:<44} {comment}".rstrip() if comment else text)
    return lines
