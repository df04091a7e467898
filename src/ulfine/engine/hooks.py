"""The trainer's periodic work: small hooks run after every optimiser step, in this fixed order.

1. ``WriteMetrics`` (every ``train.log_every``): one training record in metrics.jsonl, the
   means over the steps since the last record of the loss terms (``loss/<term>``), of the
   method's ``StepOutput.logs`` (``method_train``) and of the pseudo-label diagnostics
   (``pseudo_train``), plus the learning rate.
2. ``EvaluateAndSelect`` (every ``train.eval_every``, before the last iteration, which
   ``Trainer.fit`` evaluates itself): test (and val) metrics, the pseudo-label diagnostics since
   the last evaluation and the method's diagnostics in one record; model selection on the
   validation split only (checkpoints/best.pt).
3. ``SaveCheckpoint`` (every ``train.checkpoint_every``): checkpoints/last.pt.

The order matters for resuming: a checkpoint written at a logging or evaluation step holds that
step's window sums (reset), best-selection state and metrics.jsonl length, so a run resumed from
it neither loses nor repeats a record.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from ulfine.engine.metrics_log import MetricsLog
from ulfine.methods.base import StepOutput

if TYPE_CHECKING:
    from tqdm import tqdm

    from ulfine.engine.trainer import Trainer

logger = logging.getLogger(__name__)

# pseudo-label scalars logged with each training record (metrics.jsonl "pseudo_train")
PSEUDO_CURVE_KEYS = ("seen", "mask_rate", "pseudo_accuracy", "mean_confidence_correct", "mean_confidence_wrong")


class Hook(Protocol):
    def after_step(self, trainer: Trainer) -> None:
        """Runs after optimiser step ``trainer.state.iteration`` (already counted)."""


@dataclass
class LogWindow:
    """Sums of the loss terms and of ``StepOutput.logs`` since the last training record, and the
    steps they cover; checkpointed, so the first record after a resume averages the same steps
    as an uninterrupted run's."""

    losses: dict[str, Tensor] = field(default_factory=dict)
    logs: dict[str, Tensor] = field(default_factory=dict)
    steps: int = 0

    def add(self, out: StepOutput, grad_accum: int) -> None:
        """One micro-batch's terms (a step's value is the mean over its ``grad_accum`` micro-batches)."""
        for sums, values in ((self.losses, out.losses), (self.logs, out.logs)):
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + torch.as_tensor(value).detach().float() / grad_accum

    def means(self, sums: dict[str, Tensor]) -> dict[str, Any]:
        """Per-step means (a number, or a list for a vector)."""
        return {k: _divide(v.tolist(), self.steps) for k, v in sums.items()}

    def reset(self) -> None:
        self.losses.clear()
        self.logs.clear()
        self.steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sums": {k: v.tolist() for k, v in self.losses.items()},
                "log_sums": {k: v.tolist() for k, v in self.logs.items()}, "loss_steps": self.steps}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Checkpoints from before the exact window lack the sums (the window restarts), and
        those from before ``method_train`` lack ``log_sums``."""
        self.reset()
        self.losses.update({k: torch.tensor(v, device=device) for k, v in state.get("loss_sums", {}).items()})
        self.logs.update({k: torch.tensor(v, device=device) for k, v in state.get("log_sums", {}).items()})
        self.steps = state.get("loss_steps", 0)


def _divide(value: float | list, steps: int) -> float | list:
    return [_divide(v, steps) for v in value] if isinstance(value, list) else value / steps


class WriteMetrics:
    """1. The training record of the last ``train.log_every`` steps."""

    def __init__(self, log: MetricsLog, bar: tqdm) -> None:
        self.log, self.bar = log, bar

    def after_step(self, trainer: Trainer) -> None:
        window = trainer.window
        if trainer.state.iteration % trainer.cfg.train.log_every or not window.losses:
            return
        scalars: dict[str, Any] = {f"loss/{k}": v for k, v in window.means(window.losses).items()}
        scalars["lr"] = trainer.optimizer.param_groups[-1]["lr"]
        pseudo = trainer.window_diagnostics.compute()
        if pseudo["seen"]:
            scalars["pseudo_train"] = {k: pseudo[k] for k in PSEUDO_CURVE_KEYS}
        if window.logs:
            scalars["method_train"] = window.means(window.logs)
        trainer.window_diagnostics.reset()
        self.log.write(trainer.state.iteration, scalars)
        self.bar.set_postfix(loss=f"{sum(v for k, v in scalars.items() if k.startswith('loss/')):.3f}")
        window.reset()


class EvaluateAndSelect:
    """2. Evaluation record; the best validation class-mean accuracy keeps checkpoints/best.pt."""

    def __init__(self, log: MetricsLog) -> None:
        self.log = log

    def after_step(self, trainer: Trainer) -> None:
        it = trainer.state.iteration
        if it % trainer.cfg.train.eval_every or it >= trainer.cfg.optim.iterations:
            return
        record = {"test": trainer.evaluate("test"), "cost": trainer.cost()}
        if trainer.data.val is not None:
            record["val"] = trainer.evaluate("val")
        record["pseudo"] = trainer.diagnostics.compute()
        record["method"] = to_lists(trainer.learner.method.diagnostics())
        trainer.diagnostics.reset()
        self.log.write(it, record)
        logger.info("iteration %d: test %s", it, accuracy_line(record["test"]))
        if "val" in record:  # model selection on val only (never on test), by mean per-class accuracy
            trainer.consider_best(record["val"]["class_mean"], it)


class SaveCheckpoint:
    """3. checkpoints/last.pt, after the step's records and selection (module docstring)."""

    def after_step(self, trainer: Trainer) -> None:
        if trainer.state.iteration % trainer.cfg.train.checkpoint_every == 0:
            trainer.save_checkpoint("last")


def periodic_hooks(log: MetricsLog, bar: tqdm) -> list[Hook]:
    """The hooks in their documented order (module docstring)."""
    return [WriteMetrics(log, bar), EvaluateAndSelect(log), SaveCheckpoint()]


def accuracy_line(metrics: dict[str, Any]) -> str:
    """'top-1 45.9 %, head 54.1, medium 39.1, tail 41.9' (the groups that exist)."""
    groups = ", ".join(f"{g} {metrics[g]:.1f}" for g in ("head", "medium", "tail") if metrics.get(g) is not None)
    return f"top-1 {metrics['top1']:.1f} %" + (f", {groups}" if groups else "")


def to_lists(values: dict[str, Tensor]) -> dict[str, Any]:
    """Tensors as JSON-ready numbers and lists."""
    return {k: v.detach().cpu().tolist() if isinstance(v, Tensor) else v for k, v in values.items()}
