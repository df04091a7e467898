"""The trainer end to end on a tiny random CLIP: run folder, resume, DDP equivalence."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ulfine.config import ConfigError, RunConfig, load_config
from ulfine.engine.trainer import NonFiniteLossError, Trainer
from ulfine.models.foundation import templates_for
from ulfine.runfolder import RunFolder


def tiny_config(model_dir: Path, data_dir: Path, out: Path, *overrides: str) -> RunConfig:
    return load_config(None, [
        f"model.name=local-dir:{model_dir}", "data.dataset=imagefolder", f"data.root={data_dir}",
        "data.n1=8", "data.m1=8", "data.gamma_l=2", "data.gamma_u=2", "data.batch_size=4",
        "data.num_workers=0", "data.eval_batch_size=16", "optim.iterations=6", "optim.warmup_iterations=1",
        "optim.lr=0.05", "train.eval_every=3", "train.log_every=2", "train.checkpoint_every=3",
        "train.precision=fp32", "method.threshold=0.34", f"output.dir={out}", "output.tensorboard=false",
        *overrides,
    ])


def trained_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.learner.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=0), key


def test_run_folder_and_metrics(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=run")
    trainer = Trainer(cfg)
    result = trainer.fit()
    run = tmp_path / "runs" / "run"
    for name in ("config.yaml", "train.log", "metrics.jsonl", "metrics.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    folder = RunFolder(run)
    assert trainer.folder == folder and folder.is_run() and folder.is_finished()
    assert not folder.best_checkpoint.exists()  # no validation split: no model selection
    assert not folder.tensorboard.exists()  # output.tensorboard=false
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("top1", "head", "medium", "tail", "per_class", "train_seconds", "ece", "pseudo_labels"):
        assert key in metrics, key
    assert metrics == json.loads(json.dumps(result))
    assert metrics["iterations"] == 6 and len(metrics["per_class"]) == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/sup" in r or any(k.startswith("loss/") for k in r) for r in records)
    assert any("pseudo" in r for r in records)
    windows = [r["iteration"] for r in records if "pseudo_train" in r]  # one per log_every, for the curves
    assert windows == [2, 4, 6] and all(r["pseudo_train"]["seen"] > 0 for r in records if "pseudo_train" in r)
    assert load_config(run / "config.yaml") == cfg


def test_step_zero_is_zero_shot(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    """strategy=zeroshot with 0 iterations evaluates the text-initialised head: CLIP's zero-shot."""
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "strategy.name=zeroshot", "optim.iterations=0")
    trainer = Trainer(cfg)
    logits, targets = trainer.predict("test")
    prototypes = trainer.foundation.text_prototypes(trainer.data.class_names, templates_for(cfg.model))
    with torch.no_grad():
        images = torch.stack([trainer.data.test[i]["image"] for i in range(len(trainer.data.test))])
        z = torch.nn.functional.normalize(trainer.foundation.model.encode_image(images), dim=-1)
    assert torch.equal(logits.argmax(1), (z @ prototypes.T).argmax(1))
    assert trainer.fit()["iterations"] == 0
    with pytest.raises(ConfigError, match="optim.iterations=0"):
        tiny_config(tiny_clip_dir, tiny_folder, tmp_path, "strategy.name=zeroshot")


@pytest.mark.parametrize("method", ["fixmatch", "ulfine"])
def test_resume_reaches_the_uninterrupted_parameters(
    method: str, tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    common = (f"method.name={method}", "optim.ema=0.9")
    straight = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "a", *common))
    straight.fit()
    interrupted = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "b", *common))
    assert interrupted.fit(until=4) == {}
    resumed = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "b", *common, "output.resume=true"))
    assert resumed.state.iteration == 0
    resumed.fit()
    assert resumed.state.iteration == 6
    assert_same_state(trained_state(straight), trained_state(resumed))
    assert_same_state(straight.ema.state_dict(), resumed.ema.state_dict())


def test_non_finite_loss_stops_naming_the_term(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path, "method.name=fixmatch"))
    with torch.no_grad():
        next(trainer.learner.method.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss term '\w+' is nan at iteration 0"):
        trainer.fit()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: RunConfig, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(cfg)
    trainer.fit(until=3)
    if rank == 0:
        torch.save(trained_state(trainer), out)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("method", ["ulfine", "acr"])
def test_two_process_ddp_equals_one_process(method: str, tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    """gloo DDP over 2 processes with the global batch split gives the 1-process parameters,
    method state (prototypes, P_u, priors) included."""
    options = ["method.acr.est_every=2"] if method == "acr" else []
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "ddp", f"method.name={method}", *options)
    out = tmp_path / "ddp_state.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=True)
    single_cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "single", f"method.name={method}", *options)
    single = Trainer(single_cfg)
    single.fit(until=3)
    assert_same_state(torch.load(out), trained_state(single), atol=1e-5)


def test_metrics_json_names_the_method_diagnostics(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    """metrics.json carries how to show method_state (labels, kinds, title) and the run's tags,
    and `ulfine analyze` draws ULFine's figure from them alone."""
    from ulfine.reports.analysis import load_run, write_analysis

    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=u", "method.name=ulfine",
                      "method.ulfine.paf=false", "optim.iterations=2")
    metrics = Trainer(cfg).fit()
    assert metrics["diagnostics"]["title"] == "ULFine: text prototypes after PAF"
    assert metrics["diagnostics"]["entries"].keys() == metrics["method_state"].keys()
    assert metrics["diagnostics"]["entries"]["alpha"] == {"label": "PAF alpha", "kind": "per_class", "plot": True}
    assert metrics["run_tags"] == ["no PAF"]
    run = load_run(tmp_path / "runs" / "u")
    text = write_analysis([run], tmp_path / "analysis").read_text()
    assert run.label == "lft/ulfine (no PAF)"
    assert "## ULFine: text prototypes after PAF" in text and (tmp_path / "analysis" / "method_diagnostics.png").is_file()


def test_acr_records_its_tau_history(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=acr", "method.name=acr",
                      "strategy.name=lp", "optim.iterations=20", "train.eval_every=10")
    metrics = Trainer(cfg).fit()
    history = metrics["method_state"]["tau_history"]
    assert len(history) > 1 and [row[0] for row in history] == [2.0 * k for k in range(1, len(history) + 1)]
    records = [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    assert any("tau_history" in r.get("method", {}) for r in records)


def test_a_loss_nothing_trainable_reaches_is_a_config_error(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """ULFine text-only on a frozen encoder with C_t moved by PAF alone trains nothing: say so
    at the first step instead of autograd's 'element 0 of tensors does not require grad'."""
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=t", "strategy.name=lp",
                      "method.name=ulfine", "method.ulfine.fusion=text", "method.ulfine.train_text_prototypes=false")
    with pytest.raises(ConfigError, match=r"nothing trainable reaches the loss .*strategy.name=lp.*method.name=ulfine"):
        Trainer(cfg).fit()


def test_without_a_validation_split_the_final_weights_are_the_result(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """No model selection on test data: no best.pt, and metrics.json is the last step's test."""
    trainer = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=run"))
    result = trainer.fit()
    assert not (tmp_path / "runs" / "run" / "checkpoints" / "best.pt").exists()
    assert result["selected"] == "final" and result["best_iteration"] == -1
    assert result["top1"] == trainer.evaluate()["top1"]


def test_a_validation_split_chooses_best_pt_by_validation_only(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation peaks at iteration 3, test at 6: step 3 is selected and its test accuracy reported."""
    trainer = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=run",
                                  "data.val_per_class=2"))
    real_evaluate, real_load = trainer.evaluate, trainer._load_weights
    test_top1: dict[str, float] = {}

    def scripted(split: str = "test") -> dict:
        metrics = real_evaluate(split)
        late = trainer.state.iteration == 6 and "best" not in test_top1
        if split == "val":
            metrics["class_mean"] = 10.0 if late else 90.0
        else:
            metrics["top1"] = 99.0 if late else metrics["top1"]
            test_top1.setdefault(str(trainer.state.iteration), metrics["top1"])
        return metrics

    def load(path: Path) -> None:
        test_top1["best"] = -1.0
        real_load(path)

    monkeypatch.setattr(trainer, "evaluate", scripted)
    monkeypatch.setattr(trainer, "_load_weights", load)
    result = trainer.fit()
    assert result["selected"] == "best_val@3" and result["best_iteration"] == 3
    assert result["final_test_top1"] == 99.0 and result["top1"] == test_top1["3"]
    assert (tmp_path / "runs" / "run" / "checkpoints" / "best.pt").is_file()
