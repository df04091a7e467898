"""Training throughput: our step against the reference loop, alternated on the same inputs.

For each strategy (LP, LFT AdaptFormer, FFT) with FixMatch on one model and one fixed random
batch (B labeled + uratio*B unlabeled images, each unlabeled image with a weak and a strong
view), the variants below run one timed optimiser step (zero_grad, forward, backward, SGD) in
turn, ``--repeats`` times; the median seconds per step give images/s, counting B + uratio*B
images per step. Variants:

- reference-fp32 / reference-bf16: `reference_step.reference_step`, LIFT-style: one autograd
  forward of labeled + weak + strong.
- ours-fp32 / ours-bf16: `Learner.forward`, the trainer's step: weak view under no_grad,
  labeled + the strong images whose pseudo-label passes (`SSLMethod.strong_mask`, the sparse
  strong view) in one autograd forward (bf16 = train.precision's autocast). The fraction of
  strong images kept is reported as ``keep_fraction``.
- ours-<p>-keep25 / -keep50 (``--keep-fractions``): the same with the mask forced to keep that
  fraction, since the mask rate of the model at init (random prototypes) says nothing about
  training: LFT FixMatch at threshold 0.95 keeps ~25% after 250 iterations, ~40-60% later.
  The forced mask changes the losses, not the work, so the time is that of a real step.
- ours-<p>-dense: ``sparse_strong=False``, every strong image in the autograd forward (= keep
  100%, the step before the sparse strong view).
- ours-bf16-compile (``--compile``): ours-bf16 with `torch.compile` on the encoder.

ours-fp32 / reference-fp32 isolates the algorithmic gain; ours-bf16 / reference-fp32 is what a
user of bf16 (what ``train.precision=auto`` takes where it runs natively) sees over a fp32
LIFT-style loop; on a CPU without native bf16 compare the fp32 variants only. The FLOPs of each
variant's step are counted once (`FlopCounterMode`) and reported as GFLOP/s next to a matmul
measured in the same process (before and after the steps; the fraction uses the better of the
two). Writes bench/results/throughput-<date>.json.

    PYTHONPATH=src python bench/throughput.py
    PYTHONPATH=src python bench/throughput.py --strategies lft --repeats 3 --batch 16
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ulfine.config import MethodConfig, ModelConfig, StrategyConfig
from ulfine.engine.amp import autocast, native_bf16
from ulfine.engine.learner import Learner
from ulfine.methods.base import MethodContext, build_method
from ulfine.models.encoder import build_image_encoder
from ulfine.models.foundation import load_foundation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, RESULTS  # noqa: E402
from reference_step import reference_step  # noqa: E402

logger = logging.getLogger("bench.throughput")

NUM_CLASSES = 10
CPU = torch.device("cpu")

Step = Callable[[], float]  # runs one optimiser step, returns its seconds


def build_learner(model: str, strategy: str) -> Learner:
    foundation = load_foundation(ModelConfig(name=model, pretrained=None))
    encoder = build_image_encoder(foundation.visual, StrategyConfig(name=strategy, peft="adaptformer"),
                                  num_classes=NUM_CLASSES)
    dim = foundation.model.visual.output_dim
    prototypes = F.normalize(torch.randn(NUM_CLASSES, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    ctx = MethodContext(NUM_CLASSES, prototypes, torch.linspace(100, 1, NUM_CLASSES))
    return Learner(encoder, build_method(MethodConfig(name="fixmatch"), ctx)).train()


def make_batch(batch: int, uratio: int, size: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(n, 3, size, size, generator=g) for n in (batch, uratio * batch, uratio * batch)]
    return images[0], torch.randint(0, NUM_CLASSES, (batch,), generator=g), images[1], images[2]


def make_step(learner: Learner, forward: Callable, batch: tuple, precision: str) -> Step:
    params = [p for p in learner.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(CPU, precision):
            out = forward(*batch)
        sum(out.losses.values()).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def count_flops(step: Step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def forced_keep(learner: Learner, fraction: float) -> Callable:
    """`Learner.forward` with the strong mask forced to keep the first ``fraction`` of the strong images."""

    def forward(labeled: torch.Tensor, targets: torch.Tensor, weak: torch.Tensor, strong: torch.Tensor):
        keep = torch.arange(len(strong)) < round(fraction * len(strong))
        with mock.patch.object(learner.method, "strong_mask", lambda z_weak: keep):
            return learner(labeled, targets, weak, strong)

    return forward


def own_keep_fraction(learner: Learner, weak: torch.Tensor) -> float:
    """The fraction of strong images the method keeps on this batch (the model's own mask rate)."""
    with torch.no_grad():
        mask = learner.method.strong_mask(learner.encoder(weak))
    return 1.0 if mask is None else mask.float().mean().item()


def variants(learner: Learner, batch: tuple, compile_encoder: bool, fractions: list[float],
             precisions: list[str]) -> dict[str, Step]:
    reference = lambda *b: reference_step(learner, *b)  # noqa: E731
    dense = Learner(learner.encoder, learner.method, sparse_strong=False)
    steps = {}
    for precision in precisions:
        steps[f"reference-{precision}"] = make_step(learner, reference, batch, precision)
        steps[f"ours-{precision}"] = make_step(learner, learner, batch, precision)
        for fraction in fractions:
            steps[f"ours-{precision}-keep{round(100 * fraction)}"] = make_step(
                learner, forced_keep(learner, fraction), batch, precision
            )
        steps[f"ours-{precision}-dense"] = make_step(dense, dense, batch, precision)
    if compile_encoder and "bf16" in precisions:
        compiled = Learner(torch.compile(learner.encoder), learner.method)
        steps["ours-bf16-compile"] = make_step(compiled, compiled, batch, "bf16")
    return steps


def bench_strategy(args: argparse.Namespace, strategy: str) -> dict:
    learner = build_learner(args.model, strategy)
    size = learner.encoder.visual.image_size[0]
    batch = make_batch(args.batch, args.uratio, size)
    own = own_keep_fraction(learner, batch[2])
    steps = variants(learner, batch, args.compile, args.keep_fractions, args.precisions)
    keep = {name: 1.0 for name in steps if "reference" in name or "dense" in name}
    keep.update({name: own for name in steps if name.startswith("ours") and name not in keep})
    keep.update({f"ours-{p}-keep{round(100 * f)}": f for p in args.precisions for f in args.keep_fractions})
    flops = {}
    for name, step in steps.items():  # warm-up (and compilation) doubles as the FLOP count
        step()
        flops[name] = count_flops(step) if "compile" not in name else flops["ours-bf16"]
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(args.repeats):
        for name, step in steps.items():
            times[name].append(step())
        logger.info("%s repeat %d: %s", strategy, repeat, {k: round(v[-1], 3) for k, v in times.items()})
    images = args.batch * (1 + args.uratio)
    result = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        gflops = flops[name] / median / 1e9
        result[name] = {
            "seconds": seconds, "median_seconds": median, "images_per_s": images / median,
            "gflop_per_step": flops[name] / 1e9, "gflop_per_s": gflops,
            "keep_fraction": keep[name],
        }
    ratios = {}
    for name, r in result.items():
        for reference in {"reference-fp32", f"reference-{'bf16' if 'bf16' in name else 'fp32'}"}:
            if name != reference:
                ratios[f"{name} / {reference}"] = r["images_per_s"] / result[reference]["images_per_s"]
    return {"variants": result, "ratios": ratios, "own_keep_fraction": own}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=f"local-dir:{REPO.parent / 'shared' / 'models' / 'miniclip-ti200'}")
    parser.add_argument("--batch", type=int, default=64, help="labeled images per step")
    parser.add_argument("--uratio", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strategies", nargs="+", default=["lp", "lft", "fft"], choices=["lp", "lft", "fft"])
    parser.add_argument("--compile", action="store_true", help="also time ours-bf16 with torch.compile")
    parser.add_argument("--keep-fractions", nargs="*", type=float, default=[0.25, 0.5],
                        help="also time ours with the strong mask forced to keep these fractions")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/...)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="default fp32, plus bf16 where this CPU runs it natively (emulated bf16 "
                             "is ~85x slower and would take hours)")
    args = parser.parse_args(argv)
    if args.precisions is None:
        args.precisions = ["fp32", "bf16"] if native_bf16(CPU) else ["fp32"]
    return args


def print_table(results: dict) -> None:
    for strategy, entry in results.items():
        print(f"\n{strategy} (own keep fraction {entry['own_keep_fraction']:.2f})")
        for name, r in entry["variants"].items():
            print(f"  {name:20s} {r['images_per_s']:8.1f} img/s  {r['median_seconds']:7.3f} s/step  "
                  f"{r['gflop_per_s']:7.1f} GFLOP/s ({100 * r['fraction_of_matmul']:.0f}% of matmul)  "
                  f"keep {r['keep_fraction']:.2f}")
        for name, ratio in entry["ratios"].items():
            print(f"  {name:40s} {ratio:5.2f}x")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peak = {p: matmul_gflops(dtypes[p]) for p in args.precisions}
    results = {strategy: bench_strategy(args, strategy) for strategy in args.strategies}
    peak_after = {p: matmul_gflops(dtypes[p]) for p in args.precisions}
    # the better of the two matmul measurements: other load on the machine only lowers it
    best = {dtype: max(peak[dtype], peak_after[dtype]) for dtype in peak}
    for entry in results.values():
        for name, r in entry["variants"].items():
            r["fraction_of_matmul"] = r["gflop_per_s"] / best["bf16" if "bf16" in name else "fp32"]
    print_table(results)
    report = {
        "command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "threads": args.threads},
        "args": {k: str(v) for k, v in vars(args).items()},
        "images_per_step": args.batch * (1 + args.uratio),
        "matmul_gflop_per_s": {"before": peak, "after": peak_after},
        "results": results,
    }
    path = args.output or RESULTS / f"throughput-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
