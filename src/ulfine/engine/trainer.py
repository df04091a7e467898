"""The iteration-based training loop shared by every strategy x method cell.

One step: draw a labeled batch B and an unlabeled batch uratio*B (weak + strong views), run
the encoder once per view (``Learner``), let the method compute its losses, backward (with
gradient accumulation), clip, optimiser + schedule step, the method's no-grad update (PAF),
weight EMA (``train_step``). After each step the periodic hooks run in a fixed order
(`ulfine.engine.hooks`: metrics record, evaluation and model selection, checkpoint); resuming
(`ulfine.engine.resume`) and stopping on a signal (`ulfine.engine.stopping`) have their own
helpers. The run folder holds config.yaml, train.log, metrics.jsonl, TensorBoard scalars,
checkpoints/ and metrics.json.

Cost (`ulfine.engine.cost`): every run records ``images_seen`` (labeled + unlabeled images
drawn, an unlabeled image counted once for its two views), ``train_flops`` and
``train_seconds`` (the training steps only, not evaluation or checkpoints), cumulative and
checkpointed, in metrics.json and in every evaluation record of metrics.jsonl (``cost``).

``strategy.name=scratch`` loads no foundation model: a randomly initialised backbone at the
dataset's native resolution and statistics, linear heads initialised at random.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import logging.handlers
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ulfine.config import ConfigError, RunConfig, save_config, to_dict
from ulfine.data import LTSSLData, build_ltssl_data, make_stream
from ulfine.data.build import count_table
from ulfine.data.transforms import native_preprocess_cfg
from ulfine.engine import checkpoint as ckpt
from ulfine.engine import resume, runlock
from ulfine.engine.amp import autocast, resolve_device, resolve_precision
from ulfine.engine.cost import FlopsPerImage, measure_flops_per_image
from ulfine.engine.distributed import DistInfo, barrier, init_distributed
from ulfine.engine.evaluate import eval_loader, predict_logits
from ulfine.engine.feature_cache import feature_data
from ulfine.engine.hooks import LogWindow, accuracy_line, periodic_hooks, to_lists
from ulfine.engine.learner import Learner, build_learner
from ulfine.engine.metrics_log import MetricsLog, count_records
from ulfine.engine.optim import build_optimizer, build_scheduler, split_weight_decay, weight_ema
from ulfine.engine.stopping import StopRequest
from ulfine.methods.base import StepOutput
from ulfine.metrics.accuracy import ClassAccuracy
from ulfine.metrics.calibration import calibration
from ulfine.metrics.pseudo import PseudoLabelDiagnostics
from ulfine.errors import UlfineError
from ulfine.models.foundation import Foundation, load_foundation, verify_base_hash
from ulfine.runfolder import RunFolder

logger = logging.getLogger(__name__)


class NonFiniteLossError(UlfineError, RuntimeError):
    """A loss term or a parameter became NaN/inf; training stopped and the last good checkpoint is kept."""


@dataclass
class TrainState:
    """The counters a checkpoint carries (``train_state``)."""

    iteration: int = 0
    best_val_class_mean: float = -1.0  # model selection: the best validation class-mean accuracy; -1 without val
    best_iteration: int = -1
    train_seconds: float = 0.0
    images_seen: int = 0
    train_flops: float = 0.0

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainState:
        """Checkpoints written before the rename call ``best_val_class_mean`` ``best_top1``."""
        saved = dict(saved)
        if "best_top1" in saved:
            saved["best_val_class_mean"] = saved.pop("best_top1")
        return cls(**saved)


class Trainer:
    """Builds everything a run needs from a ``RunConfig`` and runs it (``fit``)."""

    def __init__(self, cfg: RunConfig, foundation: Foundation | None = None,
                 data: LTSSLData | None = None) -> None:
        self.cfg = cfg
        self._log_buffer = _start_log_buffer()  # what happens before the run folder exists goes to train.log too
        self.device = resolve_device(cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        # the run folder records what precision=auto chose here (and a resume must match it)
        precision = resolve_precision(cfg.train.precision, self.device)
        self.cfg = cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))
        self.run_dir = cfg.run_dir()
        self.folder = RunFolder(self.run_dir)
        self.state = TrainState()
        self.stop = StopRequest()  # SIGINT/SIGTERM received during fit
        self.window = LogWindow()  # what the next training record averages (checkpointed)
        self._log_handler: logging.Handler | None = None  # train.log, attached while fit runs
        ckpt.seed_everything(cfg.train.seed)
        self.scratch = cfg.strategy.name == "scratch"
        if self.scratch:  # never loads a foundation model (nor its text tower)
            self.foundation = None
            self.base_sha256 = None
            self.data = data or build_ltssl_data(cfg.data, native_preprocess_cfg(cfg.data.dataset))
        else:
            self.foundation = foundation or load_foundation(cfg.model, self.device)
            self.base_sha256 = self.foundation.weights_hash()  # before PEFT/FFT touch the image tower
            self.data = data or build_ltssl_data(cfg.data, self.foundation.preprocess_cfg)
        self.flops_per_image: FlopsPerImage | None = None  # measured on the first step
        self._build_model()
        self._build_optimisation()
        self._build_streams()
        self.accuracy = ClassAccuracy(groups=self.data.groups, num_classes=len(self.data.class_names))
        self.diagnostics = PseudoLabelDiagnostics(len(self.data.class_names))
        # the same diagnostics over each log_every window: pseudo-label curves with one point per log record
        self.window_diagnostics = PseudoLabelDiagnostics(len(self.data.class_names))

    # ----------------------------------------------------------------- setup
    def _build_model(self) -> None:
        cfg = self.cfg
        unlabeled_pass = math.ceil(len(self.data.unlabeled) / (cfg.data.batch_size * cfg.data.uratio))
        self.learner = build_learner(self.foundation, cfg, self.data.class_names, self.data.labeled_counts,
                                     unlabeled_pass=unlabeled_pass).to(self.device)
        if cfg.train.compile:
            self.learner.encoder = torch.compile(self.learner.encoder)
        self.model: nn.Module = self.learner
        if self.dist.enabled:
            self.model = DistributedDataParallel(
                self.learner, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.ema = None
        if cfg.optim.ema > 0:
            self.ema = weight_ema(self.learner, cfg.optim.ema)

    def _build_optimisation(self) -> None:
        cfg = self.cfg
        groups = self.learner.encoder.param_groups(cfg.optim.lr)
        groups.append({"params": [p for p in self.learner.method.parameters() if p.requires_grad]})
        groups = split_weight_decay(groups, self.learner.named_parameters())
        self.optimizer = build_optimizer(groups, cfg.optim) if cfg.optim.iterations > 0 else None
        self.scheduler = build_scheduler(self.optimizer, cfg.optim) if self.optimizer else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.precision == "fp16")

    def _build_streams(self) -> None:
        cfg, dist = self.cfg, self.dist
        micro = cfg.data.batch_size // cfg.optim.grad_accum  # global micro-batch, split over ranks
        if micro % dist.world_size or micro * cfg.optim.grad_accum != cfg.data.batch_size or micro == 0:
            raise ConfigError(
                f"data.batch_size = {cfg.data.batch_size} must be a multiple of optim.grad_accum "
                f"({cfg.optim.grad_accum}) x the number of processes ({dist.world_size})"
            )
        self._check_unlabeled_split()
        if cfg.train.feature_cache and self.learner.encoder.is_frozen and cfg.optim.iterations > 0:
            # frozen encoder: every split is served as cached features, so no step runs the encoder
            self.data = feature_data(cfg, self.foundation, self.learner.encoder, self.data, self.device,
                                     unlabeled=self.learner.method.needs_unlabeled)
        common = dict(num_workers=cfg.data.num_workers, rank=dist.rank, world_size=dist.world_size,
                      pin_memory=self.device.type == "cuda")
        self.labeled_stream = make_stream(self.data.labeled, micro, seed=cfg.train.seed, **common)
        self.unlabeled_stream = None
        if self.learner.method.needs_unlabeled and len(self.data.unlabeled) > 0:
            self.unlabeled_stream = make_stream(self.data.unlabeled, micro * cfg.data.uratio,
                                                seed=cfg.train.seed + 1, **common)

    def _check_unlabeled_split(self) -> None:
        """A semi-supervised method with no unlabeled image to train on: name the keys to change."""
        cfg = self.cfg
        if self.learner.method.needs_unlabeled and cfg.optim.iterations > 0 and len(self.data.unlabeled) == 0:
            raise ConfigError(
                f"method.name = '{cfg.method.name}' trains on unlabeled images, but the split has none "
                f"(data.m1 = {cfg.data.m1}); raise data.m1 or use method.name=supervised"
            )

    # ------------------------------------------------------------- training
    def _next_batch(self) -> dict[str, Tensor | None]:
        labeled = next(self.labeled_stream)
        batch: dict[str, Tensor | None] = {"labeled": labeled["image"], "targets": labeled["label"],
                                           "weak": None, "strong": None, "hidden": None}
        if self.unlabeled_stream is not None:
            unlabeled = next(self.unlabeled_stream)
            batch.update(weak=unlabeled["weak"], strong=unlabeled["strong"], hidden=unlabeled["label"])
        return {k: (v.to(self.device, non_blocking=True) if v is not None else None) for k, v in batch.items()}

    @property
    def stop_signal(self) -> int | None:
        """The SIGINT/SIGTERM that stopped ``fit``, if any."""
        return self.stop.signum

    def _check_finite(self, terms: list[tuple[str, Tensor]]) -> None:
        """One device sync per step for all loss terms of all its micro-batches; the terms are
        named only when one is not finite."""
        values = torch.stack([value.float().reshape(()) for _, value in terms])
        if torch.isfinite(values).all():
            return
        bad: dict[str, float] = {}
        for (name, _), value in zip(terms, values.tolist()):
            if not math.isfinite(value):
                bad.setdefault(name, value)
        raise NonFiniteLossError(
            f"{', '.join(f'loss term {name!r} is {value}' for name, value in bad.items())} at iteration "
            f"{self.state.iteration}; stopped ({self._last_good()}). Lower optim.lr or set optim.grad_clip"
        )

    def _check_finite_parameters(self) -> None:
        """A finite loss can still step to inf weights; never let those replace a good checkpoint."""
        for name, param in self.learner.named_parameters():
            if param.requires_grad and not torch.isfinite(param).all():
                raise NonFiniteLossError(
                    f"parameter '{name}' became non-finite in the optimiser step of iteration "
                    f"{self.state.iteration}; stopped ({self._last_good()}). Lower optim.lr or set optim.grad_clip"
                )

    def _last_good(self) -> str:
        last = self.folder.last_checkpoint
        return f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"

    def train_step(self) -> None:
        """One optimiser step over ``grad_accum`` micro-batches; adds its losses and logs to ``window``."""
        cfg = self.cfg
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms: list[tuple[str, Tensor]] = []
        for micro in range(cfg.optim.grad_accum):
            batch = self._next_batch()
            sync = micro == cfg.optim.grad_accum - 1 or not self.dist.enabled
            context = self.model.no_sync() if not sync else contextlib.nullcontext()
            if self.flops_per_image is None:
                self.flops_per_image = measure_flops_per_image(self.learner, tuple(batch["labeled"].shape[1:]),
                                                               self.device)
            with context:
                with autocast(self.device, cfg.train.precision):
                    out: StepOutput = self.model(batch["labeled"], batch["targets"], batch["weak"], batch["strong"])
                terms += [(name, value.detach()) for name, value in out.losses.items()]
                loss = sum(out.losses.values()) / cfg.optim.grad_accum
                if not loss.requires_grad:
                    raise ConfigError(self._nothing_trainable(out.losses))
                self.scaler.scale(loss).backward()
            views = sum(len(batch[k]) for k in ("labeled", "weak", "strong") if batch[k] is not None)
            self.state.train_flops += self.dist.world_size * self.flops_per_image.step(
                views=views, **self.learner.encoded)
            self.window.add(out, cfg.optim.grad_accum)
            if out.pseudo is not None and batch["hidden"] is not None:
                self.diagnostics.update(out.pseudo, batch["hidden"])
                self.window_diagnostics.update(out.pseudo, batch["hidden"])
        self._check_finite(terms)  # before the optimiser step: the weights stay the last good ones
        if cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.learner.parameters(), cfg.optim.grad_clip)
        self.state.images_seen += cfg.data.batch_size * (1 + (cfg.data.uratio if self.unlabeled_stream else 0))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.learner.method.after_optimizer_step()
        if self.ema is not None:
            self.ema.update_parameters(self.learner)
            if self.learner.encoder.joint_views:  # FixMatch's EMA: BatchNorm statistics copied, not averaged
                with torch.no_grad():
                    for average, current in zip(self.ema.module.encoder.buffers(), self.learner.encoder.buffers()):
                        average.copy_(current)

    def _nothing_trainable(self, losses: dict[str, Tensor]) -> str:
        """What to tell a user whose configuration leaves no trainable weight in the loss (e.g.
        ULFine's text-only fusion, C_t moved by PAF alone, on the frozen encoder of LP)."""
        cfg = self.cfg
        return (f"nothing trainable reaches the loss (terms: {', '.join(losses)}) with "
                f"strategy.name={cfg.strategy.name} and method.name={cfg.method.name}: "
                + ("the encoder is frozen under 'lp' and " if cfg.strategy.name == "lp" else "")
                + "the method's options leave no trained weight in its loss; train the encoder "
                "(strategy.name=lft or fft) or a head")

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train (or resume) to ``optim.iterations``, then evaluate; returns metrics.json's content.

        ``until`` stops early at that iteration with a checkpoint, as an interruption would
        (returns {}); a later ``fit`` with ``output.resume=true`` continues from there. The run
        folder is locked for the whole call: a second process gets `runlock.FolderBusyError`."""
        lock = runlock.FolderLock(self.run_dir, "run folder") if self.dist.is_main else None
        if lock is not None:
            lock.acquire()
        try:
            return self._fit(until)
        finally:
            if self._log_handler is not None:  # this run's records only, not the next run's
                logging.getLogger("ulfine").removeHandler(self._log_handler)
                self._log_handler.close()
                self._log_handler = None
            if lock is not None:
                lock.release()

    def _fit(self, until: int | None) -> dict[str, Any]:
        cfg = self.cfg
        stop_at = cfg.optim.iterations if until is None else min(until, cfg.optim.iterations)
        self._prepare_run_dir()
        if self.dist.is_main and self.state.iteration == 0:
            logger.info("classes (labeled counts set the head / medium / tail groups):\n%s", count_table(self.data))
        # a resumed run purges TensorBoard points after its checkpoint (the killed run's, redone)
        log = MetricsLog(self.run_dir, enabled=self.dist.is_main, tensorboard=cfg.output.tensorboard,
                         purge_step=self.state.iteration + 1 if self.state.iteration else None)
        bar = tqdm(total=cfg.optim.iterations, initial=self.state.iteration, desc="train",
                   disable=not self.dist.is_main, dynamic_ncols=True)
        hooks = periodic_hooks(log, bar)
        try:
            with self.stop.handling_signals():
                while self.state.iteration < stop_at and not self.stop.agreed(self.dist, self.device):
                    start = time.perf_counter()
                    self.train_step()
                    self.state.iteration += 1
                    self.window.steps += 1
                    self.state.train_seconds += time.perf_counter() - start
                    bar.update(1)
                    for hook in hooks:
                        hook.after_step(self)
        finally:
            bar.close()
        if self.stop_signal is not None or self.state.iteration < cfg.optim.iterations:
            self._pause()
            log.close()
            return {}
        result = self._finish(log)
        log.close()
        barrier()
        return result

    def _pause(self) -> None:
        """Stopped before the end (a signal or ``until``): checkpoint to resume from."""
        self.save_checkpoint("last")
        if self.stop_signal is None:  # after a signal `ulfine train` says it (once)
            logger.warning("stopped at iteration %d; resume with: ulfine train --config %s output.resume=true",
                           self.state.iteration, self.folder.config)

    def _finish(self, log: MetricsLog) -> dict[str, Any]:
        """The last step: evaluate, select (val only), checkpoint, then the final record and metrics.json."""
        final = self.evaluate()
        val = self.evaluate("val") if self.data.val is not None else None
        if val is not None:
            self.consider_best(val["class_mean"], self.state.iteration)
        # checkpoint first: a run killed after it redoes the final record and metrics.json
        # (the resume rewinds metrics.jsonl to this checkpoint), never logs them twice
        self.save_checkpoint("last")
        if self.dist.is_main:
            log.write(self.state.iteration, {"test": final, "cost": self.cost(), **({"val": val} if val is not None else {})})
        selected, result_test = "final", final
        if val is not None and self.state.best_iteration < self.state.iteration:
            # the validation split chose an earlier step: its weights are the result
            self._load_weights(self.folder.best_checkpoint)
            selected, result_test = f"best_val@{self.state.best_iteration}", self.evaluate()
        result = self._final_metrics(result_test)
        result["selected"] = selected
        if val is not None:
            result["val"] = val
            result["final_test_top1"] = final["top1"]  # the last step's test top-1, whichever was selected
        if self.dist.is_main:
            ckpt.atomic_write_text(self.folder.final_metrics, json.dumps(result, indent=2))
            logger.info("finished %s at iteration %d: test %s (%s weights; %.0f s training)", self.run_dir,
                        self.state.iteration, accuracy_line(result), selected, self.state.train_seconds)
        return result

    def cost(self) -> dict[str, float]:
        """The cumulative training cost so far (module docstring)."""
        return {"images_seen": self.state.images_seen, "train_flops": self.state.train_flops,
                "train_seconds": self.state.train_seconds}

    def consider_best(self, val_class_mean: float, iteration: int) -> None:
        """Keep checkpoints/best.pt for the step with the best validation accuracy so far."""
        if val_class_mean > self.state.best_val_class_mean:
            self.state.best_val_class_mean, self.state.best_iteration = val_class_mean, iteration
            self.save_checkpoint("best")

    def _load_weights(self, path: Path) -> None:
        """The model weights of checkpoint ``path`` (not its optimiser, streams or counters)."""
        state = ckpt.load_checkpoint(path, map_location=self.device)
        self.learner.encoder.load_tuned_state_dict(state["encoder"])
        self.learner.method.load_state_dict(state["method"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])

    # ------------------------------------------------------------ evaluation
    def eval_module(self) -> Learner:
        return self.ema.module if self.ema is not None else self.learner

    @torch.no_grad()
    def predict(self, split: str = "test") -> tuple[Tensor, Tensor]:
        dataset = self.data.test if split == "test" else self.data.val
        loader = eval_loader(dataset, self.cfg.data.eval_batch_size, self.cfg.data.num_workers,
                             pin_memory=self.device.type == "cuda")
        module = self.eval_module().eval()
        return predict_logits(module.predict, loader, self.device, self.cfg.train.precision,
                              desc=f"eval {split}", progress=self.dist.is_main)

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """top1 / head / medium / tail / per_class (percent), ECE and reliability bins."""
        logits, targets = self.predict(split)
        self.accuracy.reset()
        self.accuracy.update(logits, targets)
        bins = calibration(logits, targets).to_dict()
        dropped = len(self.data.test if split == "test" else self.data.val) - len(targets)  # bad_images=skip
        return {**self.accuracy.compute(), "ece": bins["ece"], "calibration": bins, "dropped_images": dropped}

    def _final_metrics(self, test: dict[str, Any]) -> dict[str, Any]:
        pseudo = self.diagnostics.compute() if self.learner.method.needs_unlabeled else {}
        return {
            **test,
            **self.cost(),
            "flops_per_image": self.flops_per_image.to_dict() if self.flops_per_image else None,
            "iterations": self.state.iteration,
            "best_selection_top1": self.state.best_val_class_mean,  # best val class_mean; -1 without a val split
            "best_iteration": self.state.best_iteration,  # -1 without a val split (no best.pt)
            "class_names": self.data.class_names,
            "labeled_counts": list(self.data.labeled_counts),
            "unlabeled_counts": list(self.data.unlabeled_counts) if self.data.unlabeled_counts else None,
            "pseudo_labels": pseudo,
            "method_state": to_lists(self.learner.method.diagnostics()),
            "diagnostics": self.learner.method.describe_diagnostics(),  # how reports show method_state
            "run_tags": self.learner.method.run_tags(),
        }

    # ------------------------------------------------------- checkpoint/resume
    def _prepare_run_dir(self) -> None:
        """Resume from checkpoints/last.pt (output.resume) or start a new run folder (`resume`)."""
        resuming = resume.should_resume(self.folder, self.cfg.output.resume)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._log_handler = _attach_file_log(self.folder.train_log, self._log_buffer)
        if resuming:
            if self.dist.is_main:
                resume.clear_partial_writes(self.folder)
            records = self.load_checkpoint(self.folder.last_checkpoint)
            if self.dist.is_main:
                resume.rewind_records(self.folder, self.state.iteration, records)
            logger.info("resumed %s at iteration %d", self.run_dir, self.state.iteration)
        elif self.dist.is_main:
            save_config(self.cfg, self.folder.config)
            logger.info("started %s: %d iterations", self.run_dir, self.cfg.optim.iterations)
        barrier()

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "iteration": self.state.iteration,
            "metrics_records": count_records(self.run_dir),
            "train_state": vars(self.state).copy(),
            "config": to_dict(self.cfg),
            "encoder": self.learner.encoder.tuned_state_dict(),
            "method": self.learner.method.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "labeled_stream": self.labeled_stream.state_dict(),
            "unlabeled_stream": self.unlabeled_stream.state_dict() if self.unlabeled_stream else None,
            "diagnostics": self.diagnostics.state_dict(),
            "window_diagnostics": self.window_diagnostics.state_dict(),
            "rng": ckpt.rng_state(),
            "base_sha256": self.base_sha256,  # resume and predict check the base model against it
            **self.window.state_dict(),  # loss_sums, log_sums, loss_steps
            # a run resumed after its last step runs no step to measure it, yet metrics.json reports it
            "flops_per_image": self.flops_per_image.to_dict() if self.flops_per_image else None,
        }

    def save_checkpoint(self, name: str) -> None:
        self._check_finite_parameters()
        if self.dist.is_main:
            ckpt.atomic_save(self.checkpoint_state(), self.folder.checkpoint(name))

    def load_checkpoint(self, path: Path) -> int | None:
        """Restore everything ``checkpoint_state`` saved; returns metrics.jsonl's length at the
        save (None in checkpoints from before it was stored)."""
        state = ckpt.load_checkpoint(path, map_location=self.device)
        resume.check_resumable(path, state["config"], self.cfg)
        if self.foundation is not None:  # scratch runs have no base model
            verify_base_hash(self.base_sha256, self.foundation.identifier, state.get("base_sha256"), self.run_dir,
                             state["config"]["model"]["name"])
        self.learner.encoder.load_tuned_state_dict(state["encoder"])
        self.learner.method.load_state_dict(state["method"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.labeled_stream.load_state_dict(state["labeled_stream"])
        if self.unlabeled_stream is not None:
            self.unlabeled_stream.load_state_dict(state["unlabeled_stream"])
        self.diagnostics.load_state_dict(state["diagnostics"])
        if "window_diagnostics" in state:  # checkpoints from before the per-window curves lack it
            self.window_diagnostics.load_state_dict(state["window_diagnostics"])
        ckpt.set_rng_state(state["rng"])
        self.state = TrainState.from_checkpoint(state["train_state"])
        self.window.load_state_dict(state, self.device)
        if state.get("flops_per_image"):  # older checkpoints lack it: measured again on the next step
            self.flops_per_image = FlopsPerImage(**state["flops_per_image"])
        return state.get("metrics_records")


class _RunLogHandler(logging.FileHandler):
    """train.log of the current run (one at a time: a new run in the same process replaces it)."""


class _LogBuffer(logging.handlers.MemoryHandler):
    """Holds ulfine's records until the run folder (and its train.log) exists."""


def _start_log_buffer() -> _LogBuffer:
    package = logging.getLogger("ulfine")
    for old in [h for h in package.handlers if isinstance(h, _LogBuffer)]:
        package.removeHandler(old)
    buffer = _LogBuffer(capacity=10_000, flushLevel=logging.CRITICAL + 1)
    package.addHandler(buffer)
    return buffer


def _attach_file_log(path: Path, buffer: _LogBuffer | None = None) -> logging.Handler:
    """Log ulfine's records to ``path`` (appending on resume), starting with the buffered ones."""
    package = logging.getLogger("ulfine")
    for old in [h for h in package.handlers if isinstance(h, _RunLogHandler)]:
        package.removeHandler(old)
        old.close()
    handler = _RunLogHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if buffer is not None:
        package.removeHandler(buffer)
        buffer.setTarget(handler)
        buffer.close()  # flushes the buffered records into train.log
    package.addHandler(handler)
    return handler
