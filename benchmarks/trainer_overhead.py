"""Trainer overhead: samples/s of ``lp.fit`` vs a hand-written PyTorch loop.

Both train the seed ConvNet for one epoch on the same 6,400 real MNIST images (100 steps of
64), with AdamW, the same seed and the same torch thread count, in one process. Runs are
interleaved, in an order rotated every repeat, so machine noise hits all alike; we report
medians and the ratio. Target: ratio >= 0.97.

    python benchmarks/trainer_overhead.py [--repeats 9] [--samples 6400] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import lepton as lp


def hand_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> None:
    """The loop an engineer writes by hand: shuffle, slice, forward, backward, step."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    criterion = nn.CrossEntropyLoss()
    model.train()
    order = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        out = model(x[idx])  # (B, 10)
        loss = criterion(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def new_model() -> nn.Module:
    torch.manual_seed(1234)
    return lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--samples", type=int, default=6400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = lp.data.load("mnist", split="train").subset(slice(0, args.samples))
    x, y = data.features, data.targets
    assert y is not None

    # Warm-up (allocator, kernels) for both paths, and an equivalence check: with the same
    # seed, lp.fit must do exactly the same arithmetic as the hand loop.
    ref, ours = new_model(), new_model()
    hand_loop(ref, x, y, args.batch_size, seed=0)
    lp.fit(ours, data, epochs=1, batch_size=args.batch_size, seed=0, quiet=True, device="cpu")
    same = all(
        torch.equal(a, b)
        for a, b in zip(ref.state_dict().values(), ours.state_dict().values(), strict=True)
    )

    runners = {
        "hand": lambda m: hand_loop(m, x, y, args.batch_size, seed=0),
        "quiet": lambda m: lp.fit(
            m, data, epochs=1, batch_size=args.batch_size, seed=0, quiet=True, device="cpu"
        ),
        "bar": lambda m: lp.fit(
            m, data, epochs=1, batch_size=args.batch_size, seed=0, device="cpu"
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for repeat in range(args.repeats):
        # Rotate the order every repeat so no variant always runs first (caches, clocks).
        for name in names[repeat % 3 :] + names[: repeat % 3]:
            model = new_model()
            t0 = time.perf_counter()
            runners[name](model)
            rates[name].append(len(x) / (time.perf_counter() - t0))
    hand_rates, fit_rates, bar_rates = rates["hand"], rates["quiet"], rates["bar"]

    hand, quiet, bar = (statistics.median(r) for r in (hand_rates, fit_rates, bar_rates))
    print()
    print(
        f"ConvNet on {len(x)} MNIST images, batch {args.batch_size}, {args.threads} threads, "
        f"{args.repeats} interleaved repeats (median samples/s, whole call timed)"
    )
    print(f"  hand-written PyTorch loop     {hand:8.0f} samples/s   (reference)")
    print(f"  lp.fit(quiet=True)            {quiet:8.0f} samples/s   ratio {quiet / hand:.3f}")
    print(f"  lp.fit (progress bar, lines)  {bar:8.0f} samples/s   ratio {bar / hand:.3f}")
    print(f"  identical weights after one epoch: {same}")
    print(f"  target: ratio >= 0.97 -> {'PASS' if quiet / hand >= 0.97 else 'FAIL'}")


if __name__ == "__main__":
    main()
