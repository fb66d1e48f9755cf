"""Data-parallel ``lp.fit``: 1 process x 2 threads vs 2 processes x 1 thread (gloo).

The seed ConvNet (``num_filters=[32, 64, 128]``, kernel 3; dropout 0 so that runs can be
compared weight for weight: dropout masks are drawn per worker) trains one epoch on the
same real MNIST images (100 steps of a global batch of 64 by default), AdamW, seed 0:

* ``1x1``: one process, 1 torch thread (the baseline for scaling efficiency);
* ``1x2``: one process, 2 torch threads;
* ``2x1``: ``fit(workers=2)``, two processes of 1 thread, 32 samples each per step,
  gradients all-reduced by DDP, BatchNorm over the global batch.

Throughput is ``FitResult.samples_per_second`` (training steps only: process start-up and
validation are excluded; the whole call, start-up included, is shown beside it). Scaling
efficiency is ``2x1 / (2 * 1x1)``. Variants are interleaved and repeated; we report medians.

Weights: ``workers=2`` must train the weights of one process with the same global batch.
In float32 this ConvNet amplifies rounding (near-ties in MaxPool over MNIST's blank
borders, BatchNorm), so even 1 vs 2 threads in one process end 1e-4..1e-1 apart after 100
steps; we print that floor beside the ``2x1`` vs ``1x2`` difference. The exactness check
(target max |diff| <= 1e-5) runs the same 100 steps in float64, where rounding is 1e-16
and any difference would be the algorithm's (a sample order, a batch statistic, a loss
weight).

    python benchmarks/distributed.py [--samples 6400] [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import lepton as lp


def new_model() -> nn.Module:
    torch.manual_seed(1234)
    return lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.0)


def run(
    train: lp.data.Dataset,
    batch: int,
    workers: int,
    threads: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float, nn.Module]:
    model = new_model().to(dtype)
    started = time.perf_counter()
    result = lp.fit(
        model, train, epochs=1, batch_size=batch, seed=0, quiet=True, num_threads=threads,
        workers=workers if workers > 1 else None,
    )  # fmt: skip
    wall = time.perf_counter() - started
    return result.samples_per_second, wall, model


def max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=6400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train = lp.data.load("mnist", split="train").subset(slice(0, args.samples))
    steps = -(-args.samples // args.batch)
    print(
        f"seed ConvNet, {args.samples} MNIST images, {steps} steps of {args.batch}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}"
    )
    variants = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}
    speed: dict[str, list[float]] = {k: [] for k in variants}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    diffs: list[float] = []
    floor: list[float] = []
    for rep in range(args.repeats):
        names = list(variants)
        names = names[rep % len(names) :] + names[: rep % len(names)]  # rotate the order
        models: dict[str, nn.Module] = {}
        for name in names:
            sps, wall, model = run(train, args.batch, *variants[name])
            speed[name].append(sps)
            walls[name].append(wall)
            models[name] = model
            print(f"  repeat {rep + 1}: {name}  {sps:8.0f} samples/s  (call {wall:.1f} s)")
        diffs.append(max_diff(models["1x2"], models["2x1"]))
        floor.append(max_diff(models["1x1"], models["1x2"]))
    exact = lp.data.Dataset(train.features.double(), train.targets, name="mnist-float64")
    _, _, one = run(exact, args.batch, 1, 2, torch.float64)
    _, _, two = run(exact, args.batch, 2, 1, torch.float64)
    exact_diff = max_diff(one, two)
    med = {k: statistics.median(v) for k, v in speed.items()}
    print()
    print("| variant | samples/s (median) | whole call (median) |")
    print("|---|---|---|")
    for name in variants:
        print(f"| {name} | {med[name]:,.0f} | {statistics.median(walls[name]):.1f} s |")
    print()
    print(f"2 processes x 1 thread vs 1 process x 2 threads: {med['2x1'] / med['1x2']:.2f}x")
    print(f"speed-up of 2x1 over 1x1: {med['2x1'] / med['1x1']:.2f}x")
    print(f"scaling efficiency 2x1 / (2 * 1x1): {med['2x1'] / (2 * med['1x1']):.0%}")
    print(f"float32, after {steps} steps: max |weight diff| 2x1 vs 1x2 {max(diffs):.2e}; "
          f"1x1 vs 1x2 (threads only) {max(floor):.2e}")  # fmt: skip
    print(f"float64, after {steps} steps: max |weight diff| 2x1 vs 1x2 {exact_diff:.2e} "
          f"(target <= 1e-5)")  # fmt: skip


if __name__ == "__main__":
    main()
