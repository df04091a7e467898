"""Using a trained model from Python: ``load_run(path).predict(images)``.

``path`` is either a run folder written by the Trainer (config.yaml + checkpoints/last.pt) or an
export folder written by ``ulfine export`` (export.json + weights.safetensors). Both hold only
the fine-tuned part (PEFT weights, method heads/prototypes/priors); the base model is rebuilt
from its identifier (``cfg.model``) exactly as training built it, and for an export its image
tower is checked against the recorded sha256 before the tuned state is loaded.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from open_clip.factory import parse_model_name
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ulfine.config import ConfigError, ModelConfig, RunConfig, load_config, run_config, to_dict
from ulfine.data import build_splits
from ulfine.data.sources import BadImageError, FileSource, as_rgb, open_image
from ulfine.engine.amp import autocast, native_bf16, resolve_device, resolve_precision
from ulfine.engine.checkpoint import load_checkpoint
from ulfine.engine.learner import Learner, build_learner
from ulfine.errors import MissingFileError, RunFolderError
from ulfine.models.foundation import (  # noqa: F401  (BaseModelMismatchError: part of this API)
    BaseModelMismatchError,
    Foundation,
    ModelNotFoundError,
    load_foundation,
    verify_base_hash,
)
from ulfine.runfolder import RunFolder

logger = logging.getLogger(__name__)

EXPORT_JSON = "export.json"
EXPORT_WEIGHTS = "weights.safetensors"
EXPORT_FORMAT = 1  # bump when export.json / the tensor keys change meaning


@dataclass
class TunedState:
    """Everything needed to rebuild a fine-tuned model on top of its base model."""

    cfg: RunConfig
    class_names: list[str]
    labeled_counts: list[int]
    encoder: dict[str, Tensor]  # ImageEncoder.tuned_state_dict()
    method: dict[str, Tensor]  # SSLMethod.state_dict()
    base_sha256: str | None  # Foundation.weights_hash() of the base; None when not recorded (old runs)
    source: Path  # where it was read from, for messages


@dataclass
class FilePrediction:
    """One image file: its top-k classes (most probable first), or why it could not be read."""

    path: str
    classes: list[str]
    probs: list[float]
    error: str | None = None


# ------------------------------------------------------------------ reading
def _ema_part(ema: dict[str, Tensor], prefix: str, keys: Sequence[str]) -> dict[str, Tensor]:
    """The EMA weights of ``keys`` from an ``AveragedModel(Learner)`` state ('module.<prefix>.<key>')."""
    return {key: ema[f"module.{prefix}.{key}"] for key in keys}


def read_run(run_dir: str | Path) -> TunedState:
    """A Trainer run folder: config.yaml, checkpoints/last.pt and (when finished) metrics.json.

    With weight EMA on, evaluation used the EMA weights, so those are the ones taken."""
    folder = RunFolder(run_dir)
    cfg = load_config(folder.config)
    state = load_checkpoint(folder.last_checkpoint)
    encoder, method = state["encoder"], state["method"]
    if state.get("ema") is not None:
        encoder = _ema_part(state["ema"], "encoder", list(encoder))
        method = _ema_part(state["ema"], "method", list(method))
    class_names, labeled_counts = _run_classes(folder, cfg)
    return TunedState(cfg, class_names, labeled_counts, encoder, method, state.get("base_sha256"), folder.path)


def _run_classes(folder: RunFolder, cfg: RunConfig) -> tuple[list[str], list[int]]:
    """Class names and labeled counts from metrics.json, else from the split (no image opened)."""
    metrics_path = folder.final_metrics
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        return list(metrics["class_names"]), [int(n) for n in metrics["labeled_counts"]]
    splits = build_splits(cfg.data)
    return list(splits.class_names), list(splits.labeled_counts)


def read_export(export_dir: str | Path) -> TunedState:
    """An ``ulfine export`` folder: export.json + weights.safetensors ('encoder.*', 'method.*')."""
    export_dir = Path(export_dir)
    meta = json.loads((export_dir / EXPORT_JSON).read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise RunFolderError(f"'{export_dir / EXPORT_JSON}' has format {meta.get('format')!r}; "
                         f"this ulfine reads format {EXPORT_FORMAT}")
    weights_path = export_dir / EXPORT_WEIGHTS
    if not weights_path.is_file():
        raise MissingFileError(f"export '{export_dir}' has no {EXPORT_WEIGHTS}")
    tensors = load_file(weights_path)
    cfg = run_config(meta["config"], source=f"the config in {export_dir / EXPORT_JSON}")
    return TunedState(
        cfg=cfg,
        class_names=list(meta["class_names"]),
        labeled_counts=[int(n) for n in meta["labeled_counts"]],
        encoder=_strip(tensors, "encoder."),
        method=_strip(tensors, "method."),
        base_sha256=meta["base_model"]["sha256"],
        source=export_dir,
    )


def _strip(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def read_tuned_state(path: str | Path) -> TunedState:
    """A run folder or an export folder, told apart by the files they hold."""
    path = Path(path)
    if (path / EXPORT_JSON).is_file():
        return read_export(path)
    if RunFolder(path).is_run():
        return read_run(path)
    raise MissingFileError(
        f"'{path}' is neither a run folder (config.yaml + checkpoints/last.pt) "
        f"nor an export folder ({EXPORT_JSON} + {EXPORT_WEIGHTS})"
    )


def refuse_scratch(state: TunedState) -> None:
    """Runs of strategy.name=scratch have no base model to load the tuned state onto."""
    if state.cfg.strategy.name == "scratch":
        raise ConfigError(
            f"'{state.source}' is a strategy.name=scratch run (no foundation model); loading it for "
            "predict / export / report is not supported yet: its metrics.json and checkpoints hold the results"
        )


def write_export(state: TunedState, foundation: Foundation, out_dir: str | Path) -> Path:
    """Write ``state`` as an export folder; ``foundation`` is its (untouched) base model, whose
    image-tower hash is recorded so loading onto different weights fails loudly."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"encoder.{k}": v for k, v in state.encoder.items()}
    tensors.update({f"method.{k}": v for k, v in state.method.items()})
    # clone: safetensors refuses tensors that share storage (tied heads/prototypes)
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, out_dir / EXPORT_WEIGHTS)
    meta = {
        "format": EXPORT_FORMAT,
        "base_model": {**to_dict(_absolute_local_dir(state.cfg.model)), "sha256": foundation.weights_hash()},
        "preprocess": foundation.preprocess_cfg,
        "class_names": state.class_names,
        "labeled_counts": state.labeled_counts,
        "config": to_dict(state.cfg),
        "source": str(state.source),
    }
    (out_dir / EXPORT_JSON).write_text(json.dumps(meta, indent=2))
    return out_dir


def _absolute_local_dir(model: ModelConfig) -> ModelConfig:
    """'local-dir:' paths made absolute, so the export loads from any working directory."""
    schema, identifier = parse_model_name(model.name)
    if schema != "local-dir":
        return model
    return dataclasses.replace(model, name=f"local-dir:{Path(identifier).resolve()}")


# ---------------------------------------------------------------- building
def check_base_model(foundation: Foundation, state: TunedState) -> None:
    """Raise ``BaseModelMismatchError`` when the image tower differs from the recorded one."""
    if state.base_sha256 is not None:
        verify_base_hash(foundation.weights_hash(), foundation.identifier, state.base_sha256, state.source,
                         state.cfg.model.name)


def load_learner(foundation: Foundation, state: TunedState) -> Learner:
    """Encoder + method as the Trainer builds them (``engine.learner.build_learner``), with the
    fine-tuned state loaded."""
    learner = build_learner(foundation, state.cfg, state.class_names, state.labeled_counts)
    try:
        learner.encoder.load_tuned_state_dict(state.encoder)
        learner.method.load_state_dict(state.method)
    except (KeyError, ValueError, RuntimeError) as err:  # shapes or keys differ from what cfg builds
        raise RunFolderError(f"the weights in '{state.source}' do not fit the model its config builds "
                             f"on '{foundation.identifier}': {str(err).strip()}") from err
    return learner


def _inference_precision(precision: str, device: torch.device) -> str:
    """fp16 autocast does not run on CPU, and bf16 crawls on a CPU without native bf16: a run
    trained in either predicts there in fp32."""
    if device.type == "cpu" and (precision == "fp16" or (precision == "bf16" and not native_bf16(device))):
        logger.info("%s run evaluated on a CPU without native %s: predicting in fp32", precision, precision)
        return "fp32"
    return resolve_precision(precision, device)


def load_run(
    path: str | Path,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    precision: str | None = None,
) -> Predictor:
    """A ``Predictor`` from a run folder or an export folder.

    ``model_name`` replaces the recorded ``model.name`` (e.g. the base weights moved); an export
    still checks the image-tower hash. ``precision`` defaults to the run's ``train.precision``,
    which is what its test metrics were computed with."""
    state = read_tuned_state(path)
    refuse_scratch(state)
    model = state.cfg.model if model_name is None else dataclasses.replace(state.cfg.model, name=model_name)
    device = resolve_device(str(device))
    try:
        foundation = load_foundation(model, device)
    except ModelNotFoundError as err:
        raise ModelNotFoundError(f"base model of '{state.source}' not found: {err} "
                                 f"(pass its location with --model / model_name=)") from err
    check_base_model(foundation, state)
    learner = load_learner(foundation, state).to(device).eval()
    precision = _inference_precision(precision or state.cfg.train.precision, device)
    return Predictor(learner, state, foundation, device, precision)


# -------------------------------------------------------------- predicting
class Predictor:
    """A fine-tuned model ready for inference: images -> class probabilities [B, C]."""

    def __init__(self, learner: Learner, state: TunedState, foundation: Foundation,
                 device: torch.device, precision: str) -> None:
        self.learner = learner
        self.state = state
        self.foundation = foundation
        self.device = device
        self.precision = precision

    @property
    def cfg(self) -> RunConfig:
        return self.state.cfg

    @property
    def class_names(self) -> list[str]:
        return self.state.class_names

    @property
    def transform(self) -> Callable[[Image.Image], Tensor]:
        """The base model's eval preprocessing (PIL image -> [3, H, W])."""
        return self.foundation.eval_transform

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Preprocessed images [B, 3, H, W] -> logits [B, C] (float32, on the CPU)."""
        with autocast(self.device, self.precision):
            logits = self.learner.predict(images.to(self.device))
        return logits.float().cpu()

    def predict(self, images: Sequence[Image.Image | str | Path] | Tensor) -> Tensor:
        """Image files or PIL images (preprocessed here), or a preprocessed batch [B, 3, H, W]
        -> probabilities [B, C]. An unreadable file raises `BadImageError` naming it."""
        if not isinstance(images, Tensor):
            images = torch.stack([self.transform(open_image(image) if isinstance(image, (str, Path)) else as_rgb(image))
                                  for image in images])
        return torch.softmax(self.logits(images), dim=-1)

    def predict_files(self, paths: Sequence[str | Path], batch_size: int = 256, top_k: int = 5,
                      num_workers: int = 0, progress: bool = True) -> list[FilePrediction]:
        """Top-k predictions per file, in the order given; unreadable files get ``error`` set."""
        top_k = min(top_k, len(self.class_names))
        files = _ImageFiles([str(p) for p in paths], self.transform, self.cfg.data.max_image_pixels)
        loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
        results: list[FilePrediction] = []
        for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress):
            results.extend(self._predict_batch(batch, top_k))
        return results

    def _predict_batch(self, batch: dict[str, Any], top_k: int) -> list[FilePrediction]:
        out = [FilePrediction(path, [], [], error) for path, error in zip(batch["paths"], batch["errors"])]
        if batch["images"] is not None:
            probs, indices = top_k_classes(self.predict(batch["images"]), top_k)
            for row, position in enumerate(batch["readable"]):
                out[position].classes = [self.class_names[k] for k in indices[row].tolist()]
                out[position].probs = probs[row].tolist()
        return out


def top_k_classes(probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` most probable classes of ``probs`` [B, C] -> (probs [B, k], indices [B, k]).

    A stable sort rather than ``topk``: bf16 logits tie often, and a tie must go to the lower
    class index as ``argmax`` (which the run's accuracy used) does."""
    probs, indices = torch.sort(probs, dim=-1, descending=True, stable=True)
    return probs[:, :k], indices[:, :k]


class _ImageFiles(Dataset):
    """Image files -> (path, preprocessed image or None, error message or None)."""

    def __init__(self, paths: list[str], transform: Callable[[Image.Image], Tensor],
                 max_pixels: int | None) -> None:
        self.source = FileSource(paths, np.full(len(paths), -1), max_pixels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[str, Tensor | None, str | None]:
        path = self.source.describe(index)
        try:
            return path, self.transform(self.source.load(index)), None
        except BadImageError as err:
            return path, None, str(err)


def _collate(items: list[tuple[str, Tensor | None, str | None]]) -> dict[str, Any]:
    """Stack the readable images; keep every path (and error) in order."""
    readable = [i for i, (_, image, _) in enumerate(items) if image is not None]
    return {
        "paths": [path for path, _, _ in items],
        "errors": [error for _, _, error in items],
        "readable": readable,
        "images": torch.stack([items[i][1] for i in readable]) if readable else None,
    }
