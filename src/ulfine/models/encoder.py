"""The image encoder under one of the paper's fine-tuning strategies (ULFINE.md §4).

``z = normalize(f(x))`` [B, D] in CLIP's joint space. Strategies, registered by name:

- ``zeroshot`` / ``lp``: everything frozen (``is_frozen``: the trainer may run it under
  ``no_grad`` and cache features).
- ``lft``: everything frozen, then the PEFT module ``strategy.peft`` is attached and only its
  parameters train.
- ``fft``: every visual weight trains, at ``strategy.fft.encoder_lr`` when set.

- ``scratch``: no foundation model; a randomly initialised backbone (``strategy.backbone``,
  `ulfine.models.backbones`) whose pooled features go, unnormalised, to the methods' linear
  heads (`ScratchEncoder`).

The text tower is never seen here: the encoder wraps ``model.visual`` only.

Attention: open_clip 3.3.0 blocks call ``nn.MultiheadAttention`` with ``need_weights=False``,
which runs PyTorch's fused ``scaled_dot_product_attention`` (and the native fast path in
no-grad inference), also with LoRA's parametrized weight, so no extra switch is needed.
Every strategy attaches to all blocks, so there is no frozen prefix to run without autograd.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulfine.config import ConfigError, StrategyConfig, option
from ulfine.models.peft import PEFT, residual_blocks
from ulfine.models.peft.adaptformer import lift_bottleneck
from ulfine.registry import STRATEGIES

logger = logging.getLogger(__name__)


@dataclass
class FFTConfig:
    """``strategy.fft.*`` (also read from the flat ``strategy.encoder_lr``)."""

    encoder_lr: float | None = option(None, range="> 0", alias="encoder_lr")  # lr of encoder weights; None = optim.lr


# STRATEGIES (ulfine.registry): visual (already frozen), cfg -> container whose parameters() are
# the ones to fine-tune


@STRATEGIES.register("zeroshot")
@STRATEGIES.register("lp")
def _frozen(visual: nn.Module, cfg: StrategyConfig) -> nn.Module:
    return nn.Module()


@STRATEGIES.register("lft")
def _lightweight(visual: nn.Module, cfg: StrategyConfig) -> nn.Module:
    return PEFT.get(cfg.peft)(visual, cfg.peft_options)


@STRATEGIES.register("fft", config=FFTConfig)
def _full(visual: nn.Module, cfg: StrategyConfig) -> nn.Module:
    return visual


@dataclass
class ScratchConfig:
    """``strategy.scratch.*`` (also read from the flat ``strategy.backbone``)."""

    backbone: str = option("wrn28_2", alias="backbone")  # models/backbones: wrn28_2 (FixMatch / ACR) | wrn28_8


@STRATEGIES.register("scratch", config=ScratchConfig)
def _scratch(visual: nn.Module | None, cfg: StrategyConfig) -> nn.Module:
    """No foundation model to tune: `build_scratch_encoder` builds the whole encoder instead."""
    raise ConfigError("strategy.name=scratch has no foundation model; build it with build_scratch_encoder")


class ImageEncoder(nn.Module):
    """``x`` [B, 3, H, W] -> ``z`` [B, D], L2-normalised; knows which of its weights are tuned.

    The tuned parameters are identified by name, so ``tuned_state_dict`` holds exactly what
    fine-tuning changed (the PEFT container, all visual weights for FFT, nothing for LP).
    """

    # True for encoders with BatchNorm (scratch): the learner then runs all views in one forward
    # (FixMatch's), so batch statistics do not depend on which strong images are kept
    joint_views: bool = False

    def __init__(self, visual: nn.Module, tuned_names: frozenset[str], encoder_lr: float | None) -> None:
        super().__init__()
        self.visual = visual
        self.tuned_names = tuned_names
        self.encoder_lr = encoder_lr

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.visual(images), dim=-1)

    @property
    def is_frozen(self) -> bool:
        """True when nothing in the encoder trains (zeroshot, lp)."""
        return not self.tuned_names

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [param for name, param in self.named_parameters() if name in self.tuned_names]

    def param_groups(self, base_lr: float) -> list[dict]:
        """Optimiser groups for the encoder: [] when frozen, else one group at its lr."""
        if self.is_frozen:
            return []
        lr = base_lr if self.encoder_lr is None else self.encoder_lr
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def tuned_state_dict(self) -> dict[str, Tensor]:
        """The fine-tuned tensors only, keyed as in ``state_dict()`` (small exports)."""
        params = self.named_parameters()
        return {name: param.detach().clone() for name, param in params if name in self.tuned_names}

    @torch.no_grad()
    def load_tuned_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of ``tuned_state_dict``; missing, unexpected or mis-shaped keys raise."""
        missing = sorted(self.tuned_names - state.keys())
        unexpected = sorted(state.keys() - self.tuned_names)
        if missing or unexpected:
            raise KeyError(
                f"tuned state does not match the encoder: missing {missing}, unexpected {unexpected}"
            )
        params = dict(self.named_parameters())
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise ValueError(
                    f"tuned state '{name}' has shape {tuple(value.shape)}, "
                    f"encoder has {tuple(params[name].shape)}"
                )
            params[name].copy_(value)


def _tuned_names(visual: nn.Module, container: nn.Module, strategy: str) -> frozenset[str]:
    """Names (under ``visual.``) of the container's parameters, which the ViT must own."""
    owned = {id(param): f"visual.{name}" for name, param in visual.named_parameters()}
    stray = [name for name, param in container.named_parameters() if id(param) not in owned]
    if stray:
        raise RuntimeError(f"strategy '{strategy}' returned parameters the ViT does not own: {stray[:5]}")
    return frozenset(owned[id(param)] for param in container.parameters())


# PEFT size options where 0 means LIFT's rule (`lift_bottleneck`): AdaptFormer's dim, LoRA's rank
AUTO_SIZES = ("dim", "rank")


def resolve_peft_dims(cfg: StrategyConfig, visual: nn.Module, num_classes: int) -> StrategyConfig:
    """``cfg`` with its PEFT module's size options left at 0 replaced by LIFT's rule for this ViT."""
    options = cfg.peft_options
    auto = lift_bottleneck(num_classes, len(residual_blocks(visual)))
    sizes = {name: auto for name in AUTO_SIZES if getattr(options, name, None) == 0}
    return dataclasses.replace(cfg, peft_options=dataclasses.replace(options, **sizes)) if sizes else cfg


def build_image_encoder(visual: nn.Module, cfg: StrategyConfig, num_classes: int | None = None) -> ImageEncoder:
    """Freezes ``visual``, applies strategy ``cfg.name`` in place, and wraps it. ``num_classes``
    resolves the PEFT sizes left at 0 (LIFT's rule)."""
    if cfg.name == "lft" and num_classes is not None:
        cfg = resolve_peft_dims(cfg, visual, num_classes)
        logger.info("lft (%s): %s", cfg.peft, cfg.peft_options)
    visual.requires_grad_(False)
    container = STRATEGIES.get(cfg.name)(visual, cfg)
    container.requires_grad_(True)
    tuned = _tuned_names(visual, container, cfg.name)
    count = sum(param.numel() for param in container.parameters())
    logger.info("strategy %s%s: %d trainable encoder parameters", cfg.name,
                f" ({cfg.peft})" if cfg.name == "lft" else "", count)
    encoder_lr = cfg.options.encoder_lr if isinstance(cfg.options, FFTConfig) else None
    return ImageEncoder(visual, tuned, encoder_lr)


class ScratchEncoder(ImageEncoder):
    """A randomly initialised backbone: every weight trains, features stay unnormalised (the
    linear head is the network's classifier, as in FixMatch's WRN), and the state is the whole
    ``state_dict`` (BatchNorm running statistics included)."""

    joint_views = True

    def __init__(self, backbone: nn.Module) -> None:
        names = frozenset(f"visual.{name}" for name, _ in backbone.named_parameters())
        super().__init__(backbone, names, None)
        self.feature_dim: int = backbone.feature_dim

    def forward(self, images: Tensor) -> Tensor:
        return self.visual(images)

    def tuned_state_dict(self) -> dict[str, Tensor]:
        return {name: value.detach().clone() for name, value in self.state_dict().items()}

    @torch.no_grad()
    def load_tuned_state_dict(self, state: dict[str, Tensor]) -> None:
        self.load_state_dict(state, strict=True)


def build_scratch_encoder(cfg: StrategyConfig) -> ScratchEncoder:
    """``strategy.scratch.backbone``, freshly initialised (draws from the global RNG: seed first)."""
    from ulfine.models.backbones import build_backbone

    backbone = cfg.options.backbone
    encoder = ScratchEncoder(build_backbone(backbone))
    logger.info("strategy scratch (%s): %d trainable parameters", backbone,
                sum(param.numel() for param in encoder.parameters()))
    return encoder
