"""SIGINT/SIGTERM during training: finish the current step, checkpoint, return."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any, Iterator

import torch

from ulfine.engine.distributed import DistInfo

logger = logging.getLogger(__name__)


class StopRequest:
    """The first SIGINT/SIGTERM asks the loop to stop after the current step (``signum`` says
    which); a second one aborts at once (KeyboardInterrupt), keeping the previous checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Installs the handlers for the ``with`` block, then restores the previous ones."""
        owner = os.getpid()

        def request_stop(signum: int, frame: Any) -> None:
            if os.getpid() != owner:  # a forked loader worker inherited this handler: the main process acts
                return
            if self.signum is not None:
                raise KeyboardInterrupt(f"signal {signum} received twice")
            logger.warning("%s: stopping after this step (send it again to abort without a checkpoint)",
                           signal.Signals(signum).name)
            self.signum = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread
                pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def agreed(self, dist: DistInfo, device: torch.device) -> bool:
        """Whether any rank got SIGINT/SIGTERM; under DDP all ranks agree, since a signal reaches
        them at slightly different moments and one rank stopping alone would hang the others."""
        if not dist.enabled:
            return self.signum is not None
        flag = torch.tensor([self.signum or 0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        signum = int(flag.item())
        if signum and self.signum is None:
            self.signum = signum
        return signum != 0
