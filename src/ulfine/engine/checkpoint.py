"""Atomic checkpoints: a killed run (even mid-write) always leaves the previous one intact."""
from __future__ import annotations

import contextlib
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import torch

from ulfine.errors import MissingFileError, UlfineError


@contextlib.contextmanager
def _atomic_open(path: Path, mode: str) -> Iterator[IO]:
    """A handle on a temp file beside ``path``; on success it is fsynced and renamed over
    ``path`` (folder fsynced too), on failure removed, so ``path`` is always old or whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; written files follow the user's umask
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:  # a full disk reports no file name: name the one being written
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically (a finished run is recognised by its metrics.json, so a
    half-written one must never exist)."""
    with _atomic_open(Path(path), "w") as handle:
        handle.write(text)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``."""
    with _atomic_open(Path(path), "wb") as handle:
        torch.save(obj, handle)


class CheckpointError(UlfineError, ValueError):
    """A checkpoint that cannot be read; the message names it and any other checkpoint beside it."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"checkpoint '{path}' is unreadable or truncated ({err}).{_alternatives(path)}") from err
    if not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(f"'{path}' is not a ulfine checkpoint (no 'config' entry).{_alternatives(path)}")
    return state


def _alternatives(broken: Path) -> str:
    """Where else to resume from: the other checkpoints in the same folder, if any."""
    others = sorted(p.name for p in broken.parent.glob("*.pt") if p != broken)
    if not others:
        return " No other checkpoint exists in that folder: delete the run folder to start over."
    return (f" Other checkpoints in '{broken.parent}': {', '.join(others)}; copy one over "
            f"'{broken.name}' to resume from it (best.pt is the best evaluated step, not the latest).")


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temp files a killed `atomic_save` left behind; returns how many."""
    stale = list(Path(folder).glob(".*.pt.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def config_changes(saved: dict[str, Any], current: dict[str, Any], allowed: frozenset[str]) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (minus ``allowed``),
    each as ``"key: old -> new"``; a key missing on one side counts as a change."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted((set(old) | set(new)) - allowed)
    missing = "<absent>"
    return [f"{k}: {old.get(k, missing)!r} -> {new.get(k, missing)!r}" for k in keys
            if old.get(k, missing) != new.get(k, missing)]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
