"""Weak, strong and eval views at the model's resolution, normalised with the model's own stats.

Size, mean, std, interpolation and resize mode come from the model's preprocess config
(``open_clip.get_model_preprocess_cfg(model)``); keys it leaves out take open_clip's
`PreprocessCfg` defaults. Nothing here hard-codes CLIP's statistics.

- weak (FixMatch's weak augmentation, scaled to the model): resize to the model size (shortest
  side, or both sides when resize_mode='squash') -> RandomCrop(size, padding=size/8, reflect)
  -> horizontal flip. For 32 px CIFAR with a 32 px model this is exactly FixMatch's
  pad-4-reflect crop; for a 224 px model the same crop after upsampling (±12.5 % shifts).
- strong, ``data.strong = fixmatch`` (default): the weak geometry + FixMatch's RandAugment
  (`FixMatchRandAugment`, the ``RandAugmentMC`` of FixMatch-pytorch that ACR copies): n =
  data.randaugment_n ops drawn with replacement from FixMatch's pool of 14, each with its own
  magnitude v uniform on 1..m-1 (m = data.randaugment_m; the reference's ``randint(1, m)``) and
  applied with probability 1/2; then FixMatch's CutoutAbs (`cutout_abs`): a grey (127) square of
  side data.cutout_side x the image side (FixMatch: 16 of 32 px) centred at a uniform point,
  clipped at the border; data.cutout_side = 0 turns it off.
- strong, ``data.strong = torchvision`` (the former default): the weak geometry + torchvision
  RandAugment(num_ops=data.randaugment_n, magnitude=data.randaugment_m, num_magnitude_bins=11:
  every op at that fixed magnitude, always applied) + Cutout as torchvision RandomErasing of a
  square with area fraction uniform in (0, data.cutout], filled with 0 after normalisation;
  data.cutout = 0 turns it off.

All randomness is drawn from torch's global generator, which `ulfine.data.views.Views` seeds per
sample, so augmentations are reproducible.
- eval: open_clip's own eval transform (`image_transform_v2`, is_train=False): resize with the
  model's interpolation + centre crop.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

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


def _sign() -> float:
    """-1 or +1 with probability 1/2 (FixMatch flips rotations, shears and shifts)."""
    return -1.0 if torch.rand(()) < 0.5 else 1.0


def _enhance(adjust: Callable[[Image.Image, float], Image.Image]) -> Callable[[Image.Image, int], Image.Image]:
    """PIL ImageEnhance ops: factor 0.05 + 0.9 v / 10 (FixMatch's max 0.9, bias 0.05)."""
    return lambda img, v: adjust(img, 0.05 + 0.9 * v / 10)


def _shear(axis: int) -> Callable[[Image.Image, int], Image.Image]:
    """Shear factor +-0.3 v / 10, as torchvision's RandAugment turns a factor into degrees."""
    def op(img: Image.Image, v: int) -> Image.Image:
        shear = [0.0, 0.0]
        shear[axis] = math.degrees(math.atan(_sign() * 0.3 * v / 10))
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, center=[0, 0])
    return op


def _translate(axis: int) -> Callable[[Image.Image, int], Image.Image]:
    """Shift by +-0.3 v / 10 of the image side, in whole pixels."""
    def op(img: Image.Image, v: int) -> Image.Image:
        shift = [0, 0]
        shift[axis] = int(_sign() * 0.3 * v / 10 * img.size[axis])
        return F.affine(img, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])
    return op


# FixMatch's fixmatch_augment_pool: name -> op(PIL image, v in 1..m-1); magnitudes as its
# _float_parameter / _int_parameter (v * max / 10, plus its bias); geometric ops fill black
FIXMATCH_OPS: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "AutoContrast": lambda img, v: F.autocontrast(img),
    "Brightness": _enhance(F.adjust_brightness),
    "Color": _enhance(F.adjust_saturation),
    "Contrast": _enhance(F.adjust_contrast),
    "Equalize": lambda img, v: F.equalize(img),
    "Identity": lambda img, v: img,
    "Posterize": lambda img, v: F.posterize(img, int(v * 4 / 10) + 4),
    "Rotate": lambda img, v: F.rotate(img, _sign() * int(v * 30 / 10)),
    "Sharpness": _enhance(F.adjust_sharpness),
    "ShearX": _shear(0),
    "ShearY": _shear(1),
    "Solarize": lambda img, v: F.solarize(img, 256 - int(v * 256 / 10)),
    "TranslateX": _translate(0),
    "TranslateY": _translate(1),
}


class FixMatchRandAugment:
    """FixMatch's RandAugment (RandAugmentMC): ``num_ops`` ops drawn with replacement, each with a
    magnitude uniform on 1..m-1 and applied with probability 1/2. PIL in, PIL out."""

    def __init__(self, num_ops: int, magnitude: int, ops: dict[str, Callable] | None = None) -> None:
        if num_ops < 1 or not 2 <= magnitude <= 10:
            raise ConfigError(
                f"FixMatch RandAugment needs data.randaugment_n >= 1 and data.randaugment_m in [2, 10] "
                f"(magnitudes are drawn from 1..m-1), got n = {num_ops}, m = {magnitude}"
            )
        self.num_ops, self.magnitude = num_ops, magnitude
        self.ops = ops if ops is not None else FIXMATCH_OPS
        self.names = list(self.ops)

    def __call__(self, img: Image.Image) -> Image.Image:
        for index in torch.randint(len(self.names), (self.num_ops,)).tolist():
            v = int(torch.randint(1, self.magnitude, ()))
            if torch.rand(()) < 0.5:
                img = self.ops[self.names[index]](img, v)
        return img


def cutout_abs(side: float) -> list[Transform]:
    """FixMatch's CutoutAbs on a [3, H, W] tensor in [0, 1]: a grey (127/255) square of side
    ``side`` x the image side, centred at a uniform point and clipped at the border; [] when off."""
    if side <= 0:
        return []

    def cut(image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        size = int(side * min(height, width))
        x0 = int(max(0.0, float(torch.rand(())) * width - size / 2))
        y0 = int(max(0.0, float(torch.rand(())) * height - size / 2))
        x1, y1 = min(width, x0 + size), min(height, y0 + size)
        return F.erase(image, y0, x0, y1 - y0, x1 - x0, torch.tensor(127 / 255))
    return [cut]


def strong_view(pcfg: PreprocessCfg, data_cfg: DataConfig) -> Transform:
    """The strong view of ``data.strong`` (module docstring)."""
    if data_cfg.strong == "fixmatch":
        randaugment = FixMatchRandAugment(data_cfg.randaugment_n, data_cfg.randaugment_m)
        normalise = T.Normalize(mean=pcfg.mean, std=pcfg.std)
        return T.Compose(weak_geometry(pcfg) + [randaugment, T.ToTensor()] + cutout_abs(data_cfg.cutout_side)
                         + [normalise])
    if data_cfg.strong != "torchvision":
        raise ConfigError(f"data.strong = {data_cfg.strong!r}; choose fixmatch or torchvision")
    if not 0 <= data_cfg.randaugment_m <= 10:
        raise ConfigError(f"data.randaugment_m = {data_cfg.randaugment_m} must be in [0, 10] (FixMatch's scale)")
    randaugment = T.RandAugment(
        num_ops=data_cfg.randaugment_n, magnitude=data_cfg.randaugment_m, num_magnitude_bins=11
    )
    return T.Compose(weak_geometry(pcfg) + [randaugment] + to_normalised_tensor(pcfg) + cutout(data_cfg.cutout))


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
    return Transforms(
        weak=T.Compose(weak_geometry(pcfg) + to_normalised_tensor(pcfg)),
        strong=strong_view(pcfg, data_cfg),
        eval=image_transform_v2(pcfg, is_train=False),
    )
