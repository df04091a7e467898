"""Accumulators of named counters kept on the device of the data (no per-step host sync)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class Accumulator:
    """Named float tensors summed over ``update`` calls; subclasses declare their shapes.

    The counters move to the device of the first batch they see; ``compute`` is where
    values go to the host. ``state_dict``/``load_state_dict`` let checkpoints carry them.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self._shapes = shapes
        self.state: dict[str, Tensor] = {}
        self.reset()

    def reset(self) -> None:
        device = next(iter(self.state.values())).device if self.state else None
        self.state = {name: torch.zeros(shape, device=device) for name, shape in self._shapes.items()}

    def _follow(self, device: torch.device) -> None:
        """Move the counters to ``device`` (a no-op once they are there)."""
        for name, value in self.state.items():
            if value.device != device:
                self.state[name] = value.to(device)

    def add(self, name: str, value: Tensor) -> None:
        self.state[name] += value.float()

    def all_reduce(self) -> None:
        """Sum the counters over DDP processes (call before ``compute`` when distributed)."""
        if dist.is_available() and dist.is_initialized():
            for value in self.state.values():
                dist.all_reduce(value)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: value.detach().cpu().clone() for name, value in self.state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self._shapes) - set(state)
        if missing:
            raise KeyError(f"{type(self).__name__} state lacks {sorted(missing)}")
        for name, shape in self._shapes.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(f"{type(self).__name__} state '{name}' has shape {tuple(state[name].shape)}, expected {shape}")
            self.state[name] = state[name].to(self.state[name].device, torch.float32).clone()


def percent(numerator: Tensor, denominator: Tensor) -> list[float | None]:
    """100 * n / d per entry, None where d == 0 (JSON has no NaN)."""
    return [None if d == 0 else 100.0 * n / d for n, d in zip(numerator.tolist(), denominator.tolist())]
