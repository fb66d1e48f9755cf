"""DP-SGD on MNIST: test accuracy at epsilon <= 3, delta = 1e-5, beside the non-private run.

The model is the tanh CNN of Papernot et al. (2020, "Tempered sigmoid activations for
deep learning with differential privacy"): conv 16 8x8 stride 2 -> maxpool 2 stride 1 ->
conv 32 4x4 stride 2 -> maxpool 2 stride 1 -> linear 32 -> linear 10, tanh throughout
(26,010 parameters; tanh keeps activations bounded, so clipped gradients lose less).
Both runs use ``lp.fit`` with the same model, optimizer (SGD, momentum 0.9), batch size,
epochs and seed; the private run adds ``privacy=lp.privacy.DPSGD(...)`` (Opacus:
Poisson sampling, per-sample clipping, noise chosen by the PRV accountant for the whole
run). Training uses all 60,000 training images; the 10,000-image test set is evaluated
after every epoch for the curve (never used to choose anything: the figure is the last
epoch's).

Usage:
    .venv/bin/python benchmarks/privacy.py            # full run (about an hour on 2 cores)
    .venv/bin/python benchmarks/privacy.py --quick    # smoke run: 6,000 rows, 1 epoch
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import torch
from torch import nn

import lepton as lp
from lepton.train import Callback, TrainState


def tanh_cnn() -> nn.Module:
    """Papernot et al. (2020)'s MNIST CNN with tanh activations."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3),
        nn.Tanh(),
        nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2),
        nn.Tanh(),
        nn.MaxPool2d(2, 1),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 32),
        nn.Tanh(),
        nn.Linear(32, 10),
    )


class TestCurve(Callback):
    """Prints test accuracy after every epoch (reporting only; nothing is selected on it)."""

    def __init__(self, test: lp.data.Dataset, label: str) -> None:
        self.test, self.label, self.curve = test, label, []  # type: list[float]
        self.started = time.perf_counter()

    def on_epoch_end(self, state: TrainState) -> None:
        acc = lp.evaluate(state.model, self.test)["accuracy"]
        self.curve.append(acc)
        seconds = time.perf_counter() - self.started
        print(f"  {self.label} epoch {state.epoch}: test accuracy {acc:.4f} ({seconds:.0f} s)",
              flush=True)  # fmt: skip


def run(label: str, train: Any, test: Any, args: argparse.Namespace, private: bool) -> dict:
    model = tanh_cnn()
    curve = TestCurve(test, label)
    privacy = (
        lp.privacy.DPSGD(
            epsilon=args.epsilon,
            delta=args.delta,
            max_grad_norm=args.clip,
            accountant=args.accountant,
        )
        if private
        else None
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus' backward-hook and RNG notices
        result = lp.fit(
            model,
            train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer="sgd",
            lr=args.lr if private else args.lr_plain,
            momentum=0.9,
            weight_decay=0.0,
            seed=0,
            quiet=True,
            callbacks=[curve],
            privacy=privacy,
        )
    seconds = time.perf_counter() - started
    final = lp.evaluate(model, test)
    return {
        "label": label,
        "accuracy": final["accuracy"],
        "seconds": seconds,
        "per_epoch": seconds / args.epochs,
        "privacy": result.privacy,
        "curve": curve.curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6,000 rows, 1 epoch")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2.0, help="SGD lr of the DP run")
    parser.add_argument("--lr-plain", type=float, default=0.1, help="SGD lr, non-private")
    parser.add_argument("--clip", type=float, default=0.1, help="max_grad_norm")
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--accountant", choices=["prv", "rdp"], default="prv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["dp", "plain"], help="run one of the two")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = lp.data.load("mnist", split="train")
    test = lp.data.load("mnist", split="test")
    if args.quick:
        train, args.epochs = train.subset(slice(0, 6000)), 1
    print(
        f"MNIST: {len(train):,} training rows, {len(test):,} test rows; tanh CNN, "
        f"{args.epochs} epochs, batch {args.batch_size}, SGD momentum 0.9",
        flush=True,
    )
    rows = []
    if args.only != "plain":
        rows.append(run("DP-SGD", train, test, args, private=True))
    if args.only != "dp":
        rows.append(run("non-private", train, test, args, private=False))
    print()
    print("| run | epsilon (delta) | accountant | noise multiplier | clip | test accuracy "
          "| wall time | per epoch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["privacy"]
        eps = f"{p['epsilon']:.2f} ({p['delta']:g})" if p else "inf (non-private)"
        acc = f"**{100 * r['accuracy']:.2f}%**"
        print(
            f"| {r['label']} | {eps} | {p['accountant'] if p else '-'} | "
            f"{p['noise_multiplier']:.3f} | {p['max_grad_norm']:g} | {acc} | "
            f"{r['seconds']:.0f} s | {r['per_epoch']:.0f} s |"
            if p
            else f"| {r['label']} | {eps} | - | - | - | {acc} | {r['seconds']:.0f} s | "
            f"{r['per_epoch']:.0f} s |"
        )
    dp = rows[0]
    if dp["privacy"] is None:
        return
    target = dp["privacy"]["epsilon"] <= 3.0 + 1e-9 and dp["accuracy"] >= 0.97
    print(f"\ntarget (>= 97% at epsilon <= 3, delta 1e-5): {'met' if target else 'NOT met'}")
    keys = ("sample_rate", "expected_batch_size", "steps", "noise_multiplier", "max_grad_norm")
    print("DP-SGD settings:", {k: dp["privacy"][k] for k in keys})


if __name__ == "__main__":
    main()
