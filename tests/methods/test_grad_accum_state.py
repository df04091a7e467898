"""Method state moves once per optimiser step, from the whole step's batch (issue 12 item 4).

With optim.grad_accum = k the trainer calls ``step`` on k micro-batches and
``after_optimizer_step`` once. The invariant: a step over the two halves of a batch leaves the
same state (P_u, prototypes, pi_hat, ACR's u_py, KL window and counter) as one step over the whole
batch; before the fix the EMAs moved once per micro-batch, so they differed."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ulfine.config import MethodConfig
from ulfine.methods.acr import ACRConfig
from ulfine.methods.ulfine import ULFineConfig
from ulfine.methods import MethodContext, build_method


def batch(num_classes: int = 4, dim: int = 8, size: int = 12) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    z = [F.normalize(torch.randn(size, dim, generator=g), dim=-1) for _ in range(3)]
    return z[0], torch.randint(0, num_classes, (size,), generator=g), z[1], z[2]


def method(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {"ulfine": ULFineConfig(pu_momentum=0.5, proto_momentum=0.5),
               "acr": ACRConfig(pu_momentum=0.5, est_every=2, est_start=0)}.get(name)
    cfg = MethodConfig(name=name, threshold=0.3, options=options)
    ctx = MethodContext(num_classes=4, text_prototypes=F.normalize(torch.randn(4, 8), dim=-1),
                        labeled_counts=torch.tensor([8, 4, 2, 1]), total_iterations=4)
    return build_method(cfg, ctx)


def run(name: str, splits: int, steps: int = 2) -> dict[str, torch.Tensor]:
    m = method(name)
    z_l, y, z_w, z_s = batch()
    for _ in range(steps):
        for part in range(splits):
            rows = slice(part * len(y) // splits, (part + 1) * len(y) // splits)
            m.step(z_l[rows], y[rows], z_w[rows], z_s[rows])
        m.after_optimizer_step()
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_split_batch_gives_the_state_of_the_whole_batch() -> None:
    for name in ("ulfine", "acr"):
        whole, halves = run(name, 1), run(name, 2)
        moved = [k for k in whole if not torch.equal(whole[k], method(name).state_dict()[k])]
        assert moved, f"{name}: the steps must move some state"
        for key in whole:
            torch.testing.assert_close(halves[key], whole[key], equal_nan=True, msg=f"{name}: {key}")
