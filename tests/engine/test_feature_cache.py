"""The frozen-encoder feature cache: key invalidation, item layout, and training on it."""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ulfine.config import RunConfig, load_config
from ulfine.data import build_ltssl_data
from ulfine.engine.feature_cache import FeatureViews, cache_key, ensure_cache, feature_data
from ulfine.engine.runlock import FolderLock
from ulfine.engine.trainer import Trainer
from ulfine.models.encoder import build_image_encoder
from ulfine.models.foundation import Foundation, load_foundation
from tests.engine.test_trainer import assert_same_state, tiny_config, trained_state


def lp_config(model_dir: Path, data_dir: Path, out: Path, *overrides: str) -> RunConfig:
    return tiny_config(model_dir, data_dir, out, "strategy.name=lp", "train.feature_bank=2",
                       f"train.cache_dir={out / 'cache'}", *overrides)


def cache_for(cfg: RunConfig, foundation: Foundation):
    data = build_ltssl_data(cfg.data, foundation.preprocess_cfg)
    encoder = build_image_encoder(foundation.visual, cfg.strategy)
    return ensure_cache(cfg, foundation, encoder, data, torch.device("cpu")), data, encoder


def test_unchanged_key_reuses_and_any_change_rebuilds(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path)
    foundation = load_foundation(cfg.model)
    first, _, _ = cache_for(cfg, foundation)
    assert first.built
    again, _, _ = cache_for(cfg, foundation)
    assert not again.built and again.folder == first.folder
    for change in ("train.feature_bank=3", "data.randaugment_m=5", "data.strong=torchvision", "data.n1=6", "train.seed=1"):
        assert cache_for(lp_config(tiny_clip_dir, tiny_folder, tmp_path, change), foundation)[0].built, change
    original = foundation.visual.proj.detach().clone()
    with torch.no_grad():
        foundation.visual.proj.mul_(1.5)  # new weights, same everything else
        assert cache_for(cfg, foundation)[0].built
        foundation.visual.proj.copy_(original)
    key_file = first.folder / "key.json"
    key = json.loads(key_file.read_text())
    key_file.write_text(json.dumps({**key, "bank": 99}))  # a folder whose key does not match
    with caplog.at_level(logging.INFO, logger="ulfine.engine.feature_cache"):
        assert cache_for(cfg, foundation)[0].built
    assert "key differs in ['bank']" in caplog.text
    assert json.loads(key_file.read_text()) == key


def test_a_new_seed_takes_the_eval_splits_from_a_finished_cache_and_encodes_the_rest(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path, "data.val_per_class=1")
    foundation = load_foundation(cfg.model)
    first = cache_for(cfg, foundation)[0].folder
    caplog.clear()  # only the second build's messages below
    with caplog.at_level(logging.INFO, logger="ulfine.engine.feature_cache"):
        second = cache_for(lp_config(tiny_clip_dir, tiny_folder, tmp_path, "data.val_per_class=1", "train.seed=1"),
                           foundation)[0].folder
    assert second != first
    assert f"test taken from {first.name}" in caplog.text and f"val taken from {first.name}" in caplog.text
    assert "encoding unlabeled" in caplog.text and "encoding test" not in caplog.text
    for name in ("test.image.npy", "test.label.npy", "val.image.npy"):
        assert np.array_equal(np.load(first / name), np.load(second / name)), name
    assert not np.array_equal(np.load(first / "unlabeled.strong.npy"), np.load(second / "unlabeled.strong.npy"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ulfine.engine.feature_cache"):  # other features: encoded anew
        cache_for(lp_config(tiny_clip_dir, tiny_folder, tmp_path, "data.val_per_class=1", "train.precision=bf16"),
                  foundation)
    assert "encoding test" in caplog.text and "taken from" not in caplog.text


def test_a_second_process_waits_for_a_live_build_of_the_same_key_and_reuses_it(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path)
    foundation = load_foundation(cfg.model)
    cache, data, encoder = cache_for(cfg, foundation)
    folder = cache.folder
    building = folder.with_name(f"{folder.name}.tmp-live")
    folder.rename(building)  # the state while another process builds: only its locked temp folder
    lock = FolderLock(building, "feature cache build").acquire()
    caplog.clear()

    def finish() -> None:  # what _build does at the end: move the folder into place, then unlock
        time.sleep(0.5)
        building.rename(folder)
        lock.release()

    thread = threading.Thread(target=finish)
    thread.start()
    with caplog.at_level(logging.INFO, logger="ulfine.engine.feature_cache"):
        again = ensure_cache(cfg, foundation, encoder, data, torch.device("cpu"), poll_seconds=0.05)
    thread.join()
    assert "another process is building" in caplog.text and "encoding" not in caplog.text
    assert not again.built and again.folder == folder


# the data.* fields in the key of CACHE_FORMAT 1 caches
FORMAT_1_DATA_FIELDS = {
    "allow_empty_classes", "bad_images", "class_names", "cutout", "cutout_side", "dataset", "distribution",
    "download", "gamma_l", "gamma_u", "labeled_in_unlabeled", "m1", "max_image_pixels", "n1", "randaugment_m",
    "randaugment_n", "root", "selection", "split_seed", "strong", "test_holdout", "val_per_class",
}


def test_a_data_field_added_later_leaves_the_key_unchanged_at_its_old_behaviour(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """Caches built before data.val_source / data.oracle_labels existed stay valid; a new data.*
    field that is not listed in _ADDED_LATER (or _LOADER_ONLY) would invalidate every cache."""
    foundation = load_foundation(lp_config(tiny_clip_dir, tiny_folder, tmp_path).model)

    def key(*overrides: str) -> dict:
        cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path, "data.val_per_class=1", *overrides)
        return cache_key(cfg, foundation, build_ltssl_data(cfg.data, foundation.preprocess_cfg))

    assert set(key()["data"]) == FORMAT_1_DATA_FIELDS
    assert key("data.val_source=unused")["data"]["val_source"] == "unused"
    assert key("data.oracle_labels=true")["data"]["oracle_labels"] is True


def test_cached_items_are_the_encoded_views(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path, "train.precision=fp32")
    foundation = load_foundation(cfg.model)
    cache, data, encoder = cache_for(cfg, foundation)
    test = FeatureViews(cache.folder, "test", ["image"])
    assert len(test) == len(data.test)
    with torch.no_grad():
        for position in (0, len(test) - 1):
            item, image_item = test[position], data.test[position]
            assert (item["label"], item["index"]) == (image_item["label"], image_item["index"])
            z = encoder(image_item["image"][None])[0]
            assert torch.allclose(item["image"], z, atol=2e-3)
    unlabeled = FeatureViews(cache.folder, "unlabeled", ["weak", "strong"])
    assert unlabeled[0]["weak"].shape == (foundation.model.visual.output_dim,)
    entries = {(tuple(unlabeled[(0, seed)]["weak"][:3].tolist()), tuple(unlabeled[(0, seed)]["strong"][:3].tolist()))
               for seed in range(4)}
    assert len(entries) == 4  # seeds 0..3 pick every (weak j, strong j') pair of a bank of 2


def test_lp_trains_on_the_cache_and_resumes_exactly(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    straight = Trainer(lp_config(tiny_clip_dir, tiny_folder, tmp_path / "a"))
    assert isinstance(straight.data.unlabeled, FeatureViews) and isinstance(straight.data.test, FeatureViews)
    result = straight.fit()
    assert result["iterations"] == 6 and 0 <= result["top1"] <= 100
    interrupted = Trainer(lp_config(tiny_clip_dir, tiny_folder, tmp_path / "b"))
    assert interrupted.fit(until=4) == {}
    resumed = Trainer(lp_config(tiny_clip_dir, tiny_folder, tmp_path / "b", "output.resume=true"))
    resumed.fit()
    assert_same_state(trained_state(straight), trained_state(resumed))


def test_cached_evaluation_matches_the_image_path(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    common = ("train.precision=fp32", "optim.iterations=1")
    cached = Trainer(lp_config(tiny_clip_dir, tiny_folder, tmp_path, *common))
    plain = Trainer(lp_config(tiny_clip_dir, tiny_folder, tmp_path, *common, "train.feature_cache=false"))
    assert not isinstance(plain.data.test, FeatureViews)
    cached_logits, cached_targets = cached.predict("test")
    plain_logits, plain_targets = plain.predict("test")
    assert torch.equal(cached_targets, plain_targets)
    assert torch.allclose(cached_logits, plain_logits, atol=0.05)


def test_feature_bank_must_be_positive(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    from ulfine.config import ConfigError

    with pytest.raises(ConfigError, match="train.feature_bank"):
        load_config(None, ["train.feature_bank=0"])


def test_feature_data_swaps_every_split(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path)
    foundation = load_foundation(cfg.model)
    data = build_ltssl_data(cfg.data, foundation.preprocess_cfg)
    encoder = build_image_encoder(foundation.visual, cfg.strategy)
    cached = feature_data(cfg, foundation, encoder, data, torch.device("cpu"))
    assert cached.class_names == data.class_names and cached.labeled_counts == data.labeled_counts
    for split in ("labeled", "unlabeled", "test"):
        assert len(getattr(cached, split)) == len(getattr(data, split))
        assert getattr(cached, split).indices.tolist() == getattr(data, split).indices


def _replace_test_images(data_dir: Path, class_name: str) -> None:
    """Every test image of ``class_name`` becomes one gray image (same names, new bytes)."""
    from PIL import Image

    for path in sorted((data_dir / "test" / class_name).iterdir()):
        Image.new("RGB", (32, 32), (128, 128, 128)).save(path)


@pytest.mark.parametrize("fingerprint", ["stat", "content"])
def test_replaced_images_rebuild_the_cache(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path,
                                           fingerprint: str) -> None:
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path, f"train.cache_fingerprint={fingerprint}")
    foundation = load_foundation(cfg.model)
    first, _, _ = cache_for(cfg, foundation)
    _replace_test_images(tiny_folder, "cat")
    second, data, _ = cache_for(cfg, foundation)
    assert second.built and second.folder != first.folder  # was: "reusing", same features
    stored = [json.loads((c.folder / "key.json").read_text()) for c in (first, second)]
    assert [k for k in stored[0] if stored[0][k] != stored[1][k]] == ["images"]
    features = FeatureViews(second.folder, "test", ["image"])
    cats = [features[i]["image"] for i in range(len(features)) if features[i]["label"] == 0]
    assert all(torch.allclose(cats[0], z, atol=1e-3) for z in cats)  # the new, identical images


def test_content_fingerprint_sees_a_rewrite_that_keeps_size_and_mtime(tiny_clip_dir: Path, tiny_folder: Path,
                                                                      tmp_path: Path) -> None:
    import os

    from PIL import Image

    path = tiny_folder / "test" / "cat" / "0000.png"
    Image.new("RGB", (32, 32), (10, 10, 10)).save(path, compress_level=0)
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path, "train.cache_fingerprint=content")
    foundation = load_foundation(cfg.model)
    cache_for(cfg, foundation)
    stat = path.stat()
    Image.new("RGB", (32, 32), (250, 250, 250)).save(path, compress_level=0)  # uncompressed: same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert path.stat().st_size == stat.st_size
    assert cache_for(cfg, foundation)[0].built
    stat_cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path / "s")
    cache_for(stat_cfg, foundation)
    Image.new("RGB", (32, 32), (10, 10, 10)).save(path, compress_level=0)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not cache_for(stat_cfg, foundation)[0].built  # the cheap default cannot see this one


class Encoding(torch.nn.Module):
    """Counts the encoder's batches and, like a kill, stops the build at batch ``die_at``."""

    def __init__(self, encoder: torch.nn.Module, die_at: int | None = None) -> None:
        super().__init__()
        self.encoder, self.die_at, self.calls = encoder, die_at, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt("killed")
        return self.encoder(images)


@pytest.mark.parametrize("damaged", [False, True])
def test_a_killed_build_resumes_at_its_last_batch_and_equals_a_straight_build(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damaged: bool
) -> None:
    common = ("data.eval_batch_size=4",)  # bank 2: two images a batch, so each split has several
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path / "b", *common)
    foundation = load_foundation(cfg.model)
    straight, data, encoder = cache_for(lp_config(tiny_clip_dir, tiny_folder, tmp_path / "a", *common), foundation)
    labeled_batches, unlabeled_batches = -(-len(data.labeled) // 2), -(-len(data.unlabeled) // 2)
    assert unlabeled_batches >= 3
    # killed inside the second unlabeled batch, between its weak and its strong views
    dying = Encoding(encoder, die_at=labeled_batches + 4)
    with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.WARNING, logger="ulfine.engine.feature_cache"):
        ensure_cache(cfg, foundation, dying, data, torch.device("cpu"))
    (partial,) = (tmp_path / "b" / "cache").glob("*.tmp-*")
    assert "keeps what was encoded" in caplog.text and str(partial) in caplog.text
    assert json.loads((partial / "progress.json").read_text())["rows"] == {"labeled": len(data.labeled),
                                                                           "unlabeled": 2}
    if damaged:  # a recorded array gone: that split starts over, never resumes onto zeros
        (partial / "unlabeled.strong.npy").unlink()
    caplog.clear()
    counting = Encoding(encoder)
    with caplog.at_level(logging.INFO, logger="ulfine.engine.feature_cache"):
        resumed = ensure_cache(cfg, foundation, counting, data, torch.device("cpu"))
    assert f"resuming the interrupted build {partial.name}" in caplog.text
    assert "encoding labeled" not in caplog.text and "from image 2" in caplog.text
    assert ("arrays of unlabeled" in caplog.text and "from the start" in caplog.text) == damaged
    test_batches = -(-len(data.test) // 4)
    redone = unlabeled_batches if damaged else unlabeled_batches - 1
    assert counting.calls == 2 * redone + test_batches  # only what was missing
    assert resumed.built and not list((tmp_path / "b" / "cache").glob("*.tmp-*"))
    names = sorted(path.name for path in straight.folder.glob("*.npy"))
    assert names == sorted(path.name for path in resumed.folder.glob("*.npy"))
    assert not (resumed.folder / "progress.json").exists()
    for name in names:
        assert np.load(straight.folder / name).tobytes() == np.load(resumed.folder / name).tobytes(), name
    assert resumed.folder.name == straight.folder.name
    assert (resumed.folder / "key.json").read_text() == (straight.folder / "key.json").read_text()


def test_temp_folders_nothing_can_resume_are_removed_and_other_settings_partial_builds_kept(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = lp_config(tiny_clip_dir, tiny_folder, tmp_path)
    cache = tmp_path / "cache"
    stale = cache / "imagefolder-0123456789abcdef.tmp-deadbeef"  # no progress record: an older layout
    stale.mkdir(parents=True)
    (stale / "test.image.npy").write_bytes(b"partial")
    other = cache / "imagefolder-fedcba9876543210.tmp-0badf00d"  # another key's build, resumable
    other.mkdir()
    (other / "progress.json").write_text(json.dumps({"key": {"seed": 7}, "rows": {"labeled": 2}}))
    with caplog.at_level(logging.INFO, logger="ulfine.engine.feature_cache"):
        cache_for(cfg, load_foundation(cfg.model))
    assert not stale.exists() and f"removed {stale}" in caplog.text
    assert (other / "progress.json").is_file() and f"kept {other}" in caplog.text
    assert sorted(cache.glob("*.tmp-*")) == [other]


def test_a_method_that_never_reads_the_unlabeled_split_does_not_encode_it(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    labels_only = Trainer(lp_config(tiny_clip_dir, tiny_folder, tmp_path, "method.name=supervised_la"))
    assert isinstance(labels_only.data.labeled, FeatureViews) and isinstance(labels_only.data.test, FeatureViews)
    assert not isinstance(labels_only.data.unlabeled, FeatureViews)  # image views, never streamed
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if (p / "key.json").exists()]
    assert not list(folder.glob("unlabeled.*")) and list(folder.glob("labeled.*"))
    assert set(json.loads((folder / "key.json").read_text())["indices"]) == {"labeled", "test"}
    # the same labeled stream, bank and head as FixMatch+LA with its unlabeled loss switched off
    semi = Trainer(lp_config(tiny_clip_dir, tiny_folder, tmp_path, "method.name=fixmatch_la", "method.lambda_u=0"))
    assert isinstance(semi.data.unlabeled, FeatureViews)
    labels_only.fit()
    semi.fit()
    assert_same_state(trained_state(labels_only), trained_state(semi))
