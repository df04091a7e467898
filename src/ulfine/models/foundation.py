"""Foundation-model loading through open_clip, and class text prototypes.

A model string is resolved in small steps (parse -> build -> load weights), each failing with
a message that says how to provide the model offline. Preprocessing (size, mean/std,
interpolation) always comes from the model's own preprocess config, never from constants.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
from open_clip.factory import parse_model_name
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors import SafetensorError
from torch import Tensor, nn

from ulfine.config import ModelConfig
from ulfine.errors import UlfineError
from ulfine.registry import Registry

logger = logging.getLogger(__name__)

Template = Callable[[str], str]
TEMPLATE_SETS: Registry[Callable[[ModelConfig], Sequence[Template]]] = Registry("template set")


@TEMPLATE_SETS.register("single")
def _single(cfg: ModelConfig) -> Sequence[Template]:
    return (lambda name: cfg.prompt.format(name),)


@TEMPLATE_SETS.register("simple")
def _simple(cfg: ModelConfig) -> Sequence[Template]:
    return open_clip.SIMPLE_IMAGENET_TEMPLATES


@TEMPLATE_SETS.register("openai")
def _openai(cfg: ModelConfig) -> Sequence[Template]:
    return open_clip.OPENAI_IMAGENET_TEMPLATES


class BaseModelMismatchError(UlfineError, ValueError):
    """The base model found at ``model.name`` is not the one a run or export was fine-tuned on."""


def verify_base_hash(found: str, identifier: str, recorded: str | None, source: str | Path,
                     trained_on: str) -> None:
    """Raise `BaseModelMismatchError` when the image tower loaded from ``identifier`` (sha256
    ``found``, `Foundation.weights_hash`) is not the one (``recorded``) that ``source`` (a run or
    an export) was fine-tuned on; ``recorded`` None: not recorded (a run from before the check)."""
    if recorded is None or found == recorded:
        return
    raise BaseModelMismatchError(
        f"base model '{identifier}' does not match '{source}': its image tower has sha256 {found}, "
        f"but '{source}' was fine-tuned on '{trained_on}' with sha256 {recorded}. Pass the original "
        "weights (--model / model_name= to predict, model.name= to resume)."
    )


class ModelWeightsError(UlfineError, ValueError):
    """A weights file that exists but cannot be read (corrupt or truncated)."""


_UNREADABLE = (SafetensorError, pickle.UnpicklingError, EOFError)


def _unreadable(what: str, err: BaseException) -> ModelWeightsError:
    return ModelWeightsError(f"the weights of {what} are unreadable, corrupt or truncated ({type(err).__name__}: "
                             f"{err}); copy or download the weights file again")


class ModelNotFoundError(UlfineError, FileNotFoundError):
    """The model or its weights cannot be found; the message says how to provide them offline."""


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pth", ".pt"}
_OFFLINE_HINT = (
    "To run offline, point model.name at a folder in open_clip format "
    "('local-dir:PATH' holding open_clip_config.json + open_clip_model.safetensors) or set "
    "model.checkpoint=FILE to a weights file for a built-in architecture."
)


@dataclass
class Foundation:
    """A loaded CLIP with what the rest of ulfine needs from it."""

    model: nn.Module  # open_clip CLIP (visual + text towers)
    tokenizer: Callable[..., Tensor]
    preprocess_cfg: dict[str, Any]  # size, mode, mean, std, interpolation, resize_mode, fill_color
    eval_transform: Callable[[Any], Tensor]  # open_clip's own eval preprocessing
    identifier: str  # the model string it was loaded from
    _prototype_cache: dict[tuple, Tensor] = field(default_factory=dict, repr=False)

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    def weights_hash(self) -> str:
        """sha256 over the image tower's weights: identifies the base model of an export."""
        return state_dict_hash(self.model.visual.state_dict())

    @torch.no_grad()
    def text_prototypes(self, class_names: Sequence[str], templates: Sequence[Template]) -> Tensor:
        """[C, D] normalised class prototypes: mean of normalised prompt embeddings, renormalised.

        Cached per (class names, prompts), so repeated evaluations encode the text once.
        """
        key = tuple(tuple(t(name) for t in templates) for name in class_names)
        if key not in self._prototype_cache:
            device = next(self.model.parameters()).device
            weights = open_clip.build_zero_shot_classifier(
                self.model, self.tokenizer, list(class_names), list(templates), device=device
            )  # [D, C]
            self._prototype_cache[key] = weights.T.float().contiguous()
        return self._prototype_cache[key].clone()


def state_dict_hash(state: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()




def _build(cfg: ModelConfig) -> nn.Module:
    """Architecture + weights from a built-in name, 'hf-hub:', 'local-dir:' or a checkpoint."""
    schema, identifier = parse_model_name(cfg.name)
    if schema == "local-dir":
        folder = Path(identifier)
        if not (folder / "open_clip_config.json").is_file():
            raise ModelNotFoundError(
                f"model folder '{folder}' does not exist or has no open_clip_config.json. {_OFFLINE_HINT}"
            )
        if cfg.checkpoint is None and not any(
            p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir()
        ):
            raise ModelNotFoundError(f"model folder '{folder}' holds no weights file. {_OFFLINE_HINT}")
    if schema is None and cfg.name.replace("/", "-") not in open_clip.list_models():
        raise ModelNotFoundError(
            f"unknown open_clip architecture '{cfg.name}'; see open_clip.list_models(). {_OFFLINE_HINT}"
        )
    if cfg.checkpoint is not None:
        return _build_with_checkpoint(cfg)
    pretrained = cfg.pretrained if schema is None else None
    try:
        return open_clip.create_model(cfg.name, pretrained=pretrained, cache_dir=cfg.cache_dir)
    except _UNREADABLE as err:
        raise _unreadable(f"model '{cfg.name}'", err) from err
    except (RuntimeError, OSError) as err:
        raise ModelNotFoundError(
            f"could not load weights for model '{cfg.name}' (pretrained={pretrained!r}): {err}. "
            f"{_OFFLINE_HINT}"
        ) from err


def _build_with_checkpoint(cfg: ModelConfig) -> nn.Module:
    path = Path(cfg.checkpoint)
    if not path.is_file():
        raise ModelNotFoundError(f"model.checkpoint file '{path}' does not exist. {_OFFLINE_HINT}")
    model = open_clip.create_model(cfg.name, pretrained=None, load_weights=False)
    try:
        open_clip.load_checkpoint(model, str(path))
    except _UNREADABLE as err:
        raise _unreadable(f"model.checkpoint '{path}'", err) from err
    return model


def load_foundation(cfg: ModelConfig, device: torch.device | str = "cpu") -> Foundation:
    """Load the CLIP named by ``cfg`` with its tokenizer and preprocessing, frozen and in eval mode."""
    model = _build(cfg).to(device).eval()
    model.requires_grad_(False)
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    eval_transform = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
    tokenizer = open_clip.get_tokenizer(cfg.name)
    logger.info("loaded %s (image size %s)", cfg.name, preprocess_cfg["size"])
    return Foundation(model, tokenizer, preprocess_cfg, eval_transform, cfg.name)


def templates_for(cfg: ModelConfig) -> Sequence[Template]:
    return TEMPLATE_SETS.get(cfg.templates)(cfg)
