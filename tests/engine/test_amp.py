"""precision=auto: bf16 only where the device runs it natively, and the run records the choice."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ulfine import api
from ulfine.config import load_config
from ulfine.engine import amp
from ulfine.engine.trainer import Trainer
from tests.engine.test_trainer import tiny_config

CPU = torch.device("cpu")


@pytest.mark.parametrize(("native", "chosen"), [(True, "bf16"), (False, "fp32")])
def test_auto_takes_bf16_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch, native: bool, chosen: str) -> None:
    monkeypatch.setattr(amp, "native_bf16", lambda device: native)
    assert amp.resolve_precision("auto", CPU) == chosen


def test_explicit_precisions_are_kept(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(amp, "native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="ulfine.engine.amp"):
        assert amp.resolve_precision("fp32", CPU) == "fp32"
        assert not caplog.records
        assert amp.resolve_precision("bf16", CPU) == "bf16"  # the user's choice, but said to be slow
    assert "no native bf16" in caplog.text and "train.precision=auto" in caplog.text


def test_auto_is_the_default_and_autocast_accepts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(None, []).train.precision == "auto"
    monkeypatch.setattr(amp, "native_bf16", lambda device: False)
    with amp.autocast(CPU, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    monkeypatch.setattr(amp, "native_bf16", lambda device: True)
    with amp.autocast(CPU, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_native_bf16_answers_on_this_machine() -> None:
    assert isinstance(amp.native_bf16(CPU), bool)


def test_the_run_folder_records_what_auto_chose(monkeypatch: pytest.MonkeyPatch, tiny_clip_dir: Path,
                                                tiny_folder: Path, tmp_path: Path) -> None:
    monkeypatch.setattr(amp, "native_bf16", lambda device: False)
    trainer = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path, "train.precision=auto",
                                  "train.device=cpu", "optim.iterations=1"))
    assert trainer.cfg.train.precision == "fp32"
    trainer.fit()
    saved = load_config(trainer.folder.config, [])
    assert saved.train.precision == "fp32"


def test_a_bf16_run_predicts_in_fp32_on_a_cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (api, amp):
        monkeypatch.setattr(module, "native_bf16", lambda device: False)
    assert api._inference_precision("bf16", CPU) == "fp32"
    assert api._inference_precision("fp16", CPU) == "fp32"
    assert api._inference_precision("auto", CPU) == "fp32"
    for module in (api, amp):
        monkeypatch.setattr(module, "native_bf16", lambda device: True)
    assert api._inference_precision("bf16", CPU) == "bf16"
