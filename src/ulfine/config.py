"""Typed run configuration: dataclasses with defaults, loaded from YAML + ``key=value`` overrides.

Converted once at the edge (`load_config`); everything below receives dataclasses. This file
holds the shared sections; each registered component (method, PEFT module, strategy, dataset)
declares its own options dataclass next to its code and names it at registration, and its
options are read under its name (``method.acr.*``, ``strategy.lora.*``; docs/ARCHITECTURE.md).
An unknown key raises with its dotted path and the closest valid key, a key of a component that
is not chosen names the chosen one and its options, and a value outside the range declared on
its field (`option`) raises naming the key and the value.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from ulfine.errors import UlfineError
from ulfine.registry import DATASETS, METHODS, PEFT, STRATEGIES, Registry, suggest

logger = logging.getLogger(__name__)


class ConfigError(UlfineError, ValueError):
    """A config file, key or value the user has to fix."""


def option(
    default: Any,
    *,
    range: str | None = None,
    alias: str | None = None,
) -> Any:
    """A config field with its valid range and, for a component's option, the flat key it was
    spelt with before components owned their options.

    ``range``: ``">= 1"``, ``"> 0"``, ``"in (0, 1]"``, ``"in [0, 1)"``... (checked by `validate`,
    which names the key and the value). ``alias``: e.g. LoRA's ``rank`` is also read from
    ``strategy.lora_rank`` (the section's flat key), so existing configs and overrides still work.
    """
    metadata: dict[str, Any] = {}
    if range is not None:
        metadata["range"] = (range, _range_check(range))
    if alias is not None:
        metadata["alias"] = alias
    return field(default=default, metadata=metadata)


_BOUND = re.compile(r"^(>=|>|<=|<) (\S+)$")
_INTERVAL = re.compile(r"^in ([\[(])(\S+), (\S+)([\])])$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b, "<": lambda v, b: v < b,
}


def _range_check(spec: str) -> Callable[[Any], bool]:
    """``">= 1"`` / ``"in (0, 1]"`` -> predicate; a malformed spec fails at import, not at use."""
    bound = _BOUND.match(spec)
    if bound:
        compare, limit = _COMPARE[bound.group(1)], float(bound.group(2))
        return lambda v: compare(v, limit)
    interval = _INTERVAL.match(spec)
    if interval:
        low_open, low, high, high_open = interval.group(1) == "(", float(interval.group(2)), \
            float(interval.group(3)), interval.group(4) == ")"
        return lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    raise ValueError(f"range '{spec}' is neither '>= x' (>, <=, <) nor 'in [a, b]' (open ends: parentheses)")


def component(registry: Registry[Any], selector: str = "name", when: tuple[str, str] | None = None) -> Any:
    """A section's slot for the options of the component that ``selector`` names.

    The component's registration declares the dataclass (``@METHODS.register("acr",
    config=ACRConfig)``); in YAML its options sit under the component's name (``method.acr.*``),
    and a key the chosen component lacks is an error naming it and its options. ``when`` =
    (field, value): the slot only applies then (PEFT options only under ``strategy.name=lft``);
    otherwise it holds None.
    """
    return field(default=None, metadata={"component": registry, "selector": selector, "when": when})


def _chosen(section: Any, slot: dataclasses.Field) -> str | None:
    """The component name a slot's selector holds, or None when the slot does not apply."""
    when = slot.metadata["when"]
    if when is not None and getattr(section, when[0]) != when[1]:
        return None
    return getattr(section, slot.metadata["selector"])


def _slots(cls: Any) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "component" in f.metadata]


class Components:
    """Base of a section with component slots: a slot left at None gets the chosen component's
    defaults, and options of the wrong type fail at construction."""

    def __post_init__(self) -> None:
        for slot in _slots(self):
            name = _chosen(self, slot)
            if name is None:
                setattr(self, slot.name, None)
                continue
            config_type = slot.metadata["component"].config(name)
            if getattr(self, slot.name) is None:
                setattr(self, slot.name, config_type())
            elif not isinstance(getattr(self, slot.name), config_type):
                raise TypeError(
                    f"{type(self).__name__}.{slot.name} must be {config_type.__name__} for "
                    f"{slot.metadata['component'].kind} '{name}', got {type(getattr(self, slot.name)).__name__}"
                )


@dataclass
class ModelConfig:
    name: str = "ViT-B-16"  # open_clip name, 'local-dir:PATH' or 'hf-hub:ORG/NAME'
    pretrained: str | None = "openai"  # open_clip pretrained tag; ignored for local-dir:/hf-hub:
    checkpoint: str | None = None  # explicit weights file (overrides `pretrained`)
    cache_dir: str | None = None  # where open_clip downloads weights
    templates: str = "single"  # prompt set: single | simple | openai (open_clip's 80 ImageNet templates)
    prompt: str = "a photo of a {}."  # the template used by `templates: single`


@dataclass
class DataConfig(Components):
    dataset: str = "cifar10"  # cifar10 | cifar100 | stl10 | smallimagenet127 | imagefolder
    root: str = "data"  # dataset folder (or torchvision download cache)
    download: bool = False  # let torchvision download CIFAR/STL when `root` lacks them
    class_names: str | None = None  # optional names file, one name per line, in class order
    n1: int = option(500, range=">= 1")  # labeled images of the most frequent class (N_1)
    m1: int = option(4000, range=">= 0")  # unlabeled images of the most frequent class (M_1)
    gamma_l: float = option(100.0, range=">= 1")  # labeled imbalance ratio N_1 / N_C
    gamma_u: float = option(100.0, range=">= 1")  # unlabeled imbalance ratio (ignored for `uniform`)
    # consistent | uniform | reversed | middle | headtail (synthetic long tail from n1/m1/gamma), or
    # natural: the data as it is (every train/<class>/ image labeled, all of unlabeled/ unlabeled)
    distribution: str = "consistent"
    # natural without a test/ folder: share of each class held out as test
    test_holdout: float = option(0.2, range="in (0, 1)")
    labeled_in_unlabeled: bool = False  # ACR's convention: unlabeled = first N_k + M_k
    selection: Literal["first", "shuffle"] = "first"  # which images of a class are taken
    split_seed: int = 0  # seed of the per-class shuffle (selection=shuffle)
    allow_empty_classes: bool = False  # permit classes with zero labeled images
    # a diagnostic, not a method: the unlabeled images also join the labeled set with their true
    # labels (the fully supervised bound of the split: what pseudo-labels could at most recover);
    # head / medium / tail stay those of the protocol's labeled counts
    oracle_labels: bool = False
    val_per_class: int = option(0, range=">= 0")  # labeled images per class held out as a validation split
    # where validation comes from: labeled = the last V_k of each class's labeled images (at most
    # half; the training set loses them); unused = val_per_class images of each class that the split
    # leaves out of labeled and unlabeled (a benchmark protocol: training data stay the table's)
    val_source: Literal["labeled", "unused"] = "labeled"
    batch_size: int = option(64, range=">= 1")  # labeled batch B (global, split across DDP processes)
    uratio: int = option(2, range=">= 1")  # unlabeled batch = uratio * B
    eval_batch_size: int = option(256, range=">= 1")
    num_workers: int = option(2, range=">= 0")
    strong: Literal["fixmatch", "torchvision"] = "fixmatch"  # strong view: FixMatch's RandAugment + Cutout, or torchvision's
    randaugment_n: int = option(2, range=">= 1")  # RandAugment ops per image (strong view)
    # RandAugment magnitude: fixmatch draws each op's from 1..m-1 (FixMatch's randint(1, m)); torchvision uses m
    randaugment_m: int = option(10, range=">= 2")
    cutout_side: float = option(0.5, range="in [0, 1]")  # fixmatch: Cutout square side as a fraction of the image side; 0 = off
    cutout: float = option(0.5, range="in [0, 1)")  # torchvision: Cutout (RandomErasing) area fraction upper bound; 0 = off
    bad_images: Literal["error", "skip"] = "error"  # corrupt files: fail naming them, or skip with a count
    options: Any = component(DATASETS, selector="dataset")  # data.<dataset>.*: the dataset's own options
    # images above this many pixels are bad images (Pillow's default limit; null = no limit)
    max_image_pixels: int | None = option(89_478_485, range=">= 1")


@dataclass
class StrategyConfig(Components):
    # scratch: a randomly initialised backbone (strategy.scratch.backbone) at the dataset's native
    # resolution, with linear heads; no foundation model is loaded (ULFINE.md section 4)
    name: Literal["zeroshot", "lp", "lft", "fft", "scratch"] = "lft"
    peft: str = "adaptformer"  # lft module (models/peft/<name>.py): adaptformer | lora | vpt | bitfit
    options: Any = component(STRATEGIES)  # strategy.<name>.*: e.g. fft's encoder_lr
    peft_options: Any = component(PEFT, selector="peft", when=("name", "lft"))  # strategy.<peft>.*


@dataclass
class HeadConfig:
    name: str = "cosine"  # cosine | linear
    # cosine-head logit scale 1/T, CLIP's T = 0.07: chosen on the validation split over LIFT's 25
    # (head.scale=25; README, "The cosine heads' scale"), where the logit-adjusted baselines gain
    # about 9 points of val class-mean and plain FixMatch / ACR's own tau are level within seed noise
    scale: float = option(1 / 0.07, range="> 0")
    init_from_text: bool = True  # initialise weights from the text prototypes


@dataclass
class MethodConfig(Components):
    """Options every SSL method reads; each method's own ones sit in ``options`` (method.<name>.*)."""

    name: str = "fixmatch"  # supervised | supervised_la | fixmatch | fixmatch_la | acr | ulfine
    threshold: float = option(0.95, range="in (0, 1]")  # confidence threshold for pseudo-labels
    lambda_u: float = option(1.0, range=">= 0")  # weight of the unlabeled loss
    la_tau: float = 1.0  # logit-adjustment strength (Menon et al.)
    options: Any = component(METHODS)  # method.<name>.*: the method's config dataclass


def uses_head(method: MethodConfig) -> bool:
    """False for a method whose config says it builds its own heads (``uses_head = False``)."""
    return getattr(method.options, "uses_head", True)


@dataclass
class OptimConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = option(0.01, range="> 0")
    weight_decay: float = option(5e-4, range=">= 0")
    momentum: float = 0.9
    nesterov: bool = True
    iterations: int = option(2000, range=">= 0")
    warmup_iterations: int = option(50, range=">= 0")
    grad_accum: int = option(1, range=">= 1")  # micro-batches per optimiser step
    grad_clip: float = 0.0  # max grad norm; 0 = off
    ema: float = option(0.0, range="in [0, 1)")  # weight EMA decay; 0 = off (evaluation uses the EMA weights when on)


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 where the device runs it natively (GPU, AVX-512/AMX CPU), else fp32; a run folder
    # records what auto chose
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_every: int = option(500, range=">= 1")
    log_every: int = option(50, range=">= 1")
    checkpoint_every: int = option(500, range=">= 1")
    compile: bool = False  # torch.compile the encoder
    # autograd forward only for the strong images whose pseudo-label passes (their loss is exact;
    # the others' is 0 anyway); False = every strong image, the reference behaviour
    sparse_strong: bool = True
    feature_cache: bool = True  # LP with a frozen encoder: train heads on cached features
    feature_bank: int = option(4, range=">= 1")  # augmentations per image in the feature cache (K)
    cache_dir: str | None = None  # feature cache folder; None = <output.dir>/.feature_cache
    # what tells the cache an image changed: each file's size + mtime (cheap), or its bytes (sha256)
    cache_fingerprint: Literal["stat", "content"] = "stat"


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
    # `applies`: (does the section apply to this run, why not); a section that doesn't apply is
    # an error when given and left out of config.yaml
    head: HeadConfig = field(
        default_factory=HeadConfig,
        metadata={"applies": (lambda run: uses_head(run.method),
                              lambda run: f"method '{run.method.name}' builds its own heads")},
    )
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


def to_dict(obj: Any) -> Any:
    """Plain data for YAML: a component's options under its name, sections that don't apply left out."""
    if not dataclasses.is_dataclass(obj):
        return list(obj) if isinstance(obj, tuple) else obj
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if "component" in f.metadata:
            if value is not None and dataclasses.fields(value):
                out[_chosen(obj, f)] = to_dict(value)
        elif "applies" not in f.metadata or f.metadata["applies"][0](obj):
            out[f.name] = to_dict(value)
    return out


def _convert(value: Any, hint: Any, key: str, lenient: bool = False) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise naming ``key``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(hint, value, prefix=key + ".", lenient=lenient)
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


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", lenient: bool = False) -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise with a suggestion.

    Component slots (`component`) are filled from the chosen component's subsection (and the
    flat aliases of its options). ``lenient``: drop, instead of rejecting, the options of
    components that are not chosen and the sections that don't apply (old run folders hold all).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    rest = dict(data)
    kwargs = {
        name: _convert(rest.pop(name), hints[name], prefix + name, lenient)
        for name, f in fields.items() if name in rest and "component" not in f.metadata
    }
    slots = _slots(cls)
    for slot in slots:
        _check_selector(cls, slot, kwargs, prefix)
    section = cls(**kwargs) if slots else None  # selectors resolved (and defaulted) as in the result
    for slot in slots:
        name = _chosen(section, slot)
        if name is not None:
            kwargs[slot.name] = _options(slot, name, rest, prefix, lenient)
    for key in list(rest):
        if not (lenient and any(_owner(slot, key) for slot in slots)):
            _reject(cls, section, key, prefix)
        logger.info("config key '%s%s' dropped: it is an option of a component this run does not use", prefix, key)
    obj = cls(**kwargs)
    for name, f in fields.items():
        if name in data and "applies" in f.metadata and not f.metadata["applies"][0](obj):
            if not lenient:
                raise ConfigError(
                    f"config section '{prefix}{name}' does not apply: {f.metadata['applies'][1](obj)}; "
                    f"remove the {prefix}{name}.* keys"
                )
            setattr(obj, name, f.default_factory())  # type: ignore[misc]
    return obj


def _check_selector(cls: type, slot: dataclasses.Field, kwargs: dict[str, Any], prefix: str) -> None:
    """A selector naming no registered component fails here, naming the key."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    selector, when = slot.metadata["selector"], slot.metadata["when"]
    if when is not None and kwargs.get(when[0], defaults[when[0]]) != when[1]:
        return
    registry, name = slot.metadata["component"], kwargs.get(selector, defaults[selector])
    if name not in registry:
        raise ConfigError(
            f"config key '{prefix}{selector}' = {name!r} is not a known {registry.kind}"
            f"{suggest(str(name), registry.names())}; known: {', '.join(registry.names())}"
        )


def _options(slot: dataclasses.Field, name: str, rest: dict[str, Any], prefix: str, lenient: bool) -> Any:
    """The chosen component's options from ``rest[name]`` plus the flat aliases of its fields."""
    config_type = slot.metadata["component"].config(name)
    raw = rest.pop(name, None)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix}{name}' must be a mapping of options, got {raw!r}")
    raw = dict(raw)
    for f in dataclasses.fields(config_type):
        alias = f.metadata.get("alias")
        if alias in rest:
            if f.name in raw:
                raise ConfigError(f"config keys '{prefix}{alias}' and '{prefix}{name}.{f.name}' set the same option; keep one")
            raw[f.name] = rest.pop(alias)
    return from_dict(config_type, raw, prefix=f"{prefix}{name}.", lenient=lenient)


def _owner(slot: dataclasses.Field, key: str) -> str | None:
    """The registered component whose options ``key`` holds (its name, or a flat alias), if any."""
    registry = slot.metadata["component"]
    for name in registry.names():
        aliases = {f.metadata.get("alias") for f in dataclasses.fields(registry.config(name))}
        if key == name or key in aliases:
            return name
    return None


def _reject(cls: type, section: Any, key: str, prefix: str) -> None:
    """Raise for ``key``: an option of a component that is not chosen names the chosen one and
    its options; anything else is an unknown key with the closest valid one."""
    where = prefix.rstrip(".") or "top level"
    for slot in _slots(cls):
        owner = _owner(slot, key)
        if owner is None:
            continue
        kind, chosen = slot.metadata["component"].kind, _chosen(section, slot)
        if chosen is None:
            when_field, when_value = slot.metadata["when"]
            raise ConfigError(
                f"config key '{prefix}{key}' is an option of {kind} '{owner}', which applies only "
                f"when {prefix}{when_field} = {when_value!r}"
            )
        names = [f.name for f in dataclasses.fields(slot.metadata["component"].config(chosen))]
        its = f"its options under '{prefix}{chosen}': {', '.join(names)}" if names else "it has no options"
        raise ConfigError(f"config key '{prefix}{key}' is not an option of {kind} '{chosen}' ({its})")
    names = [f.name for f in dataclasses.fields(cls) if "component" not in f.metadata]
    if section is not None:
        names += [_chosen(section, slot) for slot in _slots(cls) if getattr(section, slot.name) is not None
                  and dataclasses.fields(getattr(section, slot.name))]
    if not names:
        raise ConfigError(f"unknown config key '{prefix}{key}': '{where}' has no options")
    raise ConfigError(
        f"unknown config key '{prefix}{key}'{suggest(str(key), names)}; "
        f"valid keys under '{where}': {', '.join(names)}"
    )


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


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = Path(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"config file '{path}' inherits from itself through 'base:': {cycle}")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    base = data.pop("base", None)  # `base: other.yaml` inherits, relative to this file
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"config file '{path}': 'base' must be a file name, got {base!r}")
    if base is not None:
        data = _merge(read_yaml(path.parent / base, (*_chain, path.resolve())), data)
    return data


def _check_ranges(obj: Any, prefix: str) -> None:
    """Every field declared with a ``range`` (see `option`), in shared sections and components."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = _chosen(obj, f) if "component" in f.metadata else f.name
        if dataclasses.is_dataclass(value):
            _check_ranges(value, f"{prefix}{key}.")
        elif "range" in f.metadata and value is not None:
            desc, ok = f.metadata["range"]
            if not ok(value):
                raise ConfigError(f"config key '{prefix}{key}' = {value!r} is out of range: must be {desc}")


def validate(cfg: RunConfig) -> RunConfig:
    _check_ranges(cfg, "")
    if cfg.strategy.name == "zeroshot" and cfg.optim.iterations != 0:
        raise ConfigError(
            f"strategy.name = 'zeroshot' trains nothing, but optim.iterations = {cfg.optim.iterations}; "
            "set optim.iterations=0 (or use strategy.name=lp to train heads on the frozen encoder)"
        )
    if cfg.strategy.name == "scratch" and cfg.method.name == "ulfine":
        raise ConfigError(
            "method.name = 'ulfine' needs CLIP's text prototypes, which strategy.name = 'scratch' "
            "does not have (it loads no foundation model); use a foundation-model strategy "
            "(lp, lft, fft) with ulfine, or fixmatch / fixmatch_la / acr / supervised with scratch"
        )
    return cfg


def written_before_components(data: dict[str, Any]) -> bool:
    """A config.yaml resolved before components owned their options: it holds every method's
    options at once (``method.acr`` and ``method.ulfine``), and flat PEFT keys of every module."""
    method = data.get("method")
    return isinstance(method, dict) and {"acr", "ulfine"} <= method.keys()


def upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    """An old resolved config -> today's layout: options of components the run did not use (and
    ``head`` under a method with its own heads) are dropped; they had no effect on the run."""
    if not written_before_components(data):
        return data
    logger.info("%s was written before components owned their options; reading the chosen ones", source)
    try:
        return to_dict(from_dict(RunConfig, data, lenient=True))
    except ConfigError as err:
        raise ConfigError(f"{source} (written by an older ulfine) cannot be read: {err}") from err


def run_config(data: dict[str, Any], overrides: list[str] | None = None, source: str = "config") -> RunConfig:
    """A config tree (+ overrides) -> validated RunConfig; old resolved trees are upgraded first."""
    data = _merge(upgrade(data, source), parse_overrides(overrides or []))
    return validate(from_dict(RunConfig, data))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated RunConfig."""
    data = read_yaml(path) if path is not None else {}
    return run_config(data, overrides, source=f"config file '{path}'")


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
        if "component" in f.metadata:  # each registered component's own options, under its name
            registry: Registry[Any] = f.metadata["component"]
            for name in registry.names():
                options = registry.config(name)
                if dataclasses.fields(options):
                    lines.append(f"  {prefix}{name}.*  (when {prefix}{f.metadata['selector']} = {name})")
                    lines.extend(config_help(options, f"{prefix}{name}."))
            continue
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
