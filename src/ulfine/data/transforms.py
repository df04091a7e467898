"""Weak, strong and eval views at the model's resolution, normalised with the model's own stats.

Size, mean, std, interpolation and resize mode come from the model's preprocess config
(``open_clip.get_model_preprocess_cfg(model)``); keys it leaves out take open_clip's
`PreprocessCfg` defaults. Nothing here hard-codes CLIP's statistics.

- weak (FixMatch's weak augmentation, scaled to the model): resize to the model size (shortest
  side, or both sides when resize_mode='squash') -> RandomCrop(size, padding=size/8, reflect)
  -> horizontal flip. For 32 px CIFAR with a 32 px model this is exactly FixMatch's
  pad-4-reflect crop; for a 224 px model the same crop after upsampling (±12.5 % shifts).
- strong: the weak geometry + torchvision RandAugment(num_ops=data.randaugment_n,
  magnitude=data.randaugment_m, num_magnitude_bins=11: m is on FixMatch's 0..10 scale, 10 =
  each op's strongest setting) + Cutout as torchvision RandomErasing of a square with area
  fraction uniform in (0, data.cutout], filled with 0 after normalisation (the mean colour, as
  FixMatch's grey Cutout); data.cutout = 0 turns Cutout off.
- eval: open_clip's own eval transform (`image_transform_v2`, is_train=False): resize with the
  model's interpolation + centre crop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from open_clip.transform import PreprocessCfg, image_transform_v2
from torchvision import transforms as T

from ulfine.config import ConfigError, DataConfig

Transform = Callable[[Any], Any]


@dataclass(frozen=True)
class Transforms:
    weak: Transform
    strong: Transform
    eval: Transform


def to_preprocess_cfg(preprocess_cfg: dict[str, Any]) -> PreprocessCfg:
    """open_clip's preprocess dict -> `PreprocessCfg`; an unknown key raises naming it."""
    known = {f.name for f in dataclasses.fields(PreprocessCfg)}
    unknown = sorted(set(preprocess_cfg) - known)
    if unknown:
        raise ConfigError(f"unknown preprocess config key(s) {unknown}; known: {sorted(known)}")
    return PreprocessCfg(**preprocess_cfg)


def image_size(pcfg: PreprocessCfg) -> tuple[int, int]:
    size = pcfg.size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def weak_geometry(pcfg: PreprocessCfg) -> list[Transform]:
    """Resize to the model size, random crop with reflect padding of 1/8, horizontal flip."""
    height, width = image_size(pcfg)
    interpolation = T.InterpolationMode(pcfg.interpolation)
    resize_to = (height, width) if pcfg.resize_mode == "squash" else min(height, width)
    return [
        T.Resize(resize_to, interpolation=interpolation),
        T.RandomCrop((height, width), padding=min(height, width) // 8, padding_mode="reflect"),
        T.RandomHorizontalFlip(),
    ]


def to_normalised_tensor(pcfg: PreprocessCfg) -> list[Transform]:
    return [T.ToTensor(), T.Normalize(mean=pcfg.mean, std=pcfg.std)]


def cutout(area: float) -> list[Transform]:
    """Cutout as RandomErasing: always one square of area fraction in (0, area]; [] when off."""
    return [T.RandomErasing(p=1.0, scale=(0.0, area), ratio=(1.0, 1.0), value=0)] if area > 0 else []


# Native resolution and channel statistics for a backbone trained from scratch
# (strategy.name=scratch), which has no model preprocess config: FixMatch's / ACR's values.
NATIVE_PREPROCESS: dict[str, dict[str, Any]] = {
    "cifar10": {"size": 32, "mean": (0.4914, 0.4822, 0.4465), "std": (0.2471, 0.2435, 0.2616)},
    "cifar100": {"size": 32, "mean": (0.5071, 0.4867, 0.4408), "std": (0.2675, 0.2565, 0.2761)},
}


def native_preprocess_cfg(dataset: str) -> dict[str, Any]:
    """A preprocess dict (as `build_transforms` takes) at ``dataset``'s own size and statistics."""
    if dataset not in NATIVE_PREPROCESS:
        raise ConfigError(
            f"strategy.name = 'scratch' trains at the dataset's native resolution, known for "
            f"{', '.join(NATIVE_PREPROCESS)}, not for data.dataset = '{dataset}'"
        )
    return dict(NATIVE_PREPROCESS[dataset])


def build_transforms(preprocess_cfg: dict[str, Any], data_cfg: DataConfig) -> Transforms:
    """The three views of the module docstring, from the model's preprocess dict."""
    pcfg = to_preprocess_cfg(preprocess_cfg)
    if not 0 <= data_cfg.randaugment_m <= 10:
        raise ConfigError(f"data.randaugment_m = {data_cfg.randaugment_m} must be in [0, 10] (FixMatch's scale)")
    randaugment = T.RandAugment(
        num_ops=data_cfg.randaugment_n, magnitude=data_cfg.randaugment_m, num_magnitude_bins=11
    )
    return Transforms(
        weak=T.Compose(weak_geometry(pcfg) + to_normalised_tensor(pcfg)),
        strong=T.Compose(
            weak_geometry(pcfg) + [randaugment] + to_normalised_tensor(pcfg) + cutout(data_cfg.cutout)
        ),
        eval=image_transform_v2(pcfg, is_train=False),
    )
