"""Trainer overhead: samples/s of ``lp.fit`` vs a hand-written PyTorch loop and Lightning.

All arms train the seed ConvNet (as the plain-torch :class:`PlainConvNet` of
``_lightning_model.py``, the same layers, parameter names and initial weights as
``lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3)``) for one
epoch on the same real MNIST images, AdamW(lr 1e-3, weight decay 0.01), seed 0, the same
batch and the same torch thread count:

* single process: the hand loop, ``lp.fit(quiet=True)`` and PyTorch Lightning's
  ``Trainer`` (no validation, checkpointing, logger, progress bar or model summary);
* DDP (when ``lp.fit`` takes ``workers``): ``lp.fit(workers=2)`` vs
  ``Trainer(strategy="ddp", devices=2, accelerator="cpu")``, 2 processes x 1 thread, the
  same global batch (half of it per process), gloo. Not the same arithmetic:
  ``lp.fit(workers=N)`` normalises BatchNorm over the global batch (so it matches one
  process, at the cost of extra all-reduces in every BatchNorm layer), while Lightning's
  BatchNorm is per rank (its ``sync_batchnorm=True`` needs GPU modules in torch).

Lightning runs from its own venv, ``benchmarks/.venvs/lightning`` (made on first use: torch
first, so pip keeps the CPU build, then ``lightning``), as a subprocess running
``_lightning_run.py`` on an .npz of the data and initial weights exported here. In single
process mode it stays up and trains on request, so it is interleaved with the in-process
arms and, like them, pays no interpreter start or imports per repeat. Each timing is the
whole call (set-up included). Arms are interleaved, the order rotated every round; we report
the median and the spread (min..max) of samples/s, and ratios of medians. Targets:
``lp.fit`` >= 1.0x Lightning (single and DDP) and >= 0.97x the hand loop.

    python benchmarks/trainer_overhead.py [--repeats 5] [--samples 6400] [--threads 2]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import lepton as lp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lightning_model import PlainConvNet, param_count

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "lightning"
PYTHON = VENV / "bin" / "python"
RUNNER = HERE / "_lightning_run.py"
STAMP = VENV / "lepton-bench-stamp.json"


def ensure_lightning(reinstall: bool = False) -> dict[str, str]:
    """The Lightning venv's versions, building the venv first if it is missing or broken."""
    probe = [str(PYTHON), "-c", "import json, lightning, torch; print(json.dumps("
             "{'lightning': lightning.__version__, 'torch': torch.__version__}))"]  # fmt: skip
    if not reinstall and PYTHON.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0:
            return json.loads(done.stdout)  # type: ignore[no-any-return]
    print(f"installing Lightning into {VENV.relative_to(HERE.parent)} (a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(PYTHON), "-m", "pip", "install", "-qq"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # first: the CPU build stays
    subprocess.run([*pip, "torch==2.13.0", "numpy", "lightning"], check=True)
    versions: dict[str, str] = json.loads(
        subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    )
    STAMP.write_text(json.dumps(versions))
    return versions


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


def initial_weights() -> dict[str, torch.Tensor]:
    """The zoo ConvNet's initial weights (seed 1234), checked to fit PlainConvNet exactly."""
    torch.manual_seed(1234)
    zoo = lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.5)
    plain = PlainConvNet()
    plain.load_state_dict(zoo.state_dict(), strict=True)  # same names and shapes
    assert param_count(plain) == param_count(zoo), (param_count(plain), param_count(zoo))
    probe = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(zoo.eval()(probe), plain.eval()(probe)), "PlainConvNet != ConvNet"
    return {k: v.clone() for k, v in zoo.state_dict().items()}


class LightningServer:
    """The single-process Lightning arm: one long-lived process that trains on request."""

    def __init__(self, data: Path, batch_size: int, threads: int) -> None:
        self.proc = subprocess.Popen(
            [str(PYTHON), str(RUNNER), "--data", str(data), "--batch-size", str(batch_size),
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def fit(self, save: Path | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"fit {save or ''}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Lightning process ended (exit {self.proc.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def lightning_ddp(data: Path, batch_size: int, workers: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [str(PYTHON), str(RUNNER), "--data", str(data), "--batch-size", str(batch_size),
         "--threads", "1", "--ddp", str(workers)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"Lightning DDP failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def interleave(runners: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """samples/s of each runner, ``repeats`` rounds, the order rotated every round."""
    rates: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            rates[name].append(runners[name]())
        print(f"  round {r + 1}/{repeats}: " + ", ".join(
            f"{n} {rates[n][-1]:.0f}/s" for n in names), flush=True)  # fmt: skip
    return rates


def describe(rates: list[float]) -> str:
    med = statistics.median(rates)
    return (
        f"{med:8.0f} samples/s  (min {min(rates):.0f}, max {max(rates):.0f}, ±{spread(rates):.1%})"
    )


def spread(rates: list[float]) -> float:
    """Half the min..max range, relative to the median."""
    return (max(rates) - min(rates)) / 2 / statistics.median(rates)


def ratio_line(name: str, ours: list[float], ref: list[float], target: float) -> str:
    r = statistics.median(ours) / statistics.median(ref)
    per_round = [a / b for a, b in zip(ours, ref, strict=True)]
    verdict = "PASS" if r >= target else "FAIL"
    return (
        f"  {name:34s} {r:.3f}  (per round {min(per_round):.3f}..{max(per_round):.3f}; "
        f"target >= {target:.2f}: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=6400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes of the DDP arm")
    parser.add_argument("--ddp-repeats", type=int, default=None, help="default: --repeats")
    parser.add_argument("--ddp-only", action="store_true", help="skip the single-process arms")
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP arm")
    parser.add_argument("--reinstall", action="store_true", help="rebuild the Lightning venv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    versions = ensure_lightning(args.reinstall)
    data = lp.data.load("mnist", split="train").subset(slice(0, args.samples))
    x, y = data.features, data.targets
    assert y is not None
    init = initial_weights()

    def new_model() -> nn.Module:
        model = PlainConvNet()
        model.load_state_dict(init, strict=True)
        return model

    def fit(model: nn.Module, **extra: Any) -> Any:
        return lp.fit(
            model, data, epochs=1, batch_size=args.batch_size, seed=0, quiet=True,
            device="cpu", **extra,
        )  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="lepton-trainer-overhead-"))
    npz = tmp / "mnist.npz"
    np.savez(
        npz, x=x.numpy(), y=y.numpy(), **{f"w:{k}": v.numpy() for k, v in init.items()}
    )  # fmt: skip
    print(
        f"Lightning {versions['lightning']} (torch {versions['torch']}), lepton torch "
        f"{torch.__version__}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    single: dict[str, list[float]] = {}
    same, lt_diff = False, float("nan")
    if not args.ddp_only:
        # Warm-up of every arm, and equivalence checks: lp.fit must do exactly the hand loop's
        # arithmetic; Lightning's weights after the epoch are shown for information.
        server = LightningServer(npz, args.batch_size, args.threads)
        try:
            ref, ours = new_model(), new_model()
            hand_loop(ref, x, y, args.batch_size, seed=0)
            fit(ours)
            same = all(
                torch.equal(a, b)
                for a, b in zip(ref.state_dict().values(), ours.state_dict().values(), strict=True)
            )
            lt = server.fit(tmp / "lightning-weights.npz")
            with np.load(tmp / "lightning-weights.npz") as saved:
                lt_diff = max(
                    float((torch.from_numpy(saved[k]).double() - v.double()).abs().max())
                    for k, v in ref.state_dict().items()
                )
            assert lt["threads"] == args.threads, lt

            def timed(run: Callable[[nn.Module], object]) -> Callable[[], float]:
                def once() -> float:
                    model = new_model()
                    t0 = time.perf_counter()
                    run(model)
                    return len(x) / (time.perf_counter() - t0)

                return once

            print(f"single process, {args.repeats} rounds:", flush=True)
            single = interleave(
                {
                    "hand": timed(lambda m: hand_loop(m, x, y, args.batch_size, seed=0)),
                    "lp.fit": timed(fit),
                    "lightning": lambda: len(x) / server.fit()["seconds"],
                },
                args.repeats,
            )
        finally:
            server.close()

    ddp: dict[str, list[float]] | None = None
    ddp_epoch: dict[str, list[float]] = {"lp.fit": [], "lp.fit per-rank BN": [], "lightning": []}
    has_workers = "workers" in inspect.signature(lp.fit).parameters
    if has_workers and not args.no_ddp:

        def lp_ddp(sync: bool = True) -> float:
            model = new_model()
            t0 = time.perf_counter()
            result = fit(model, workers=args.workers, num_threads=1, sync_batchnorm=sync)
            seconds = time.perf_counter() - t0
            ddp_epoch["lp.fit" if sync else "lp.fit per-rank BN"].append(
                float(result.samples_per_second)
            )
            return len(x) / seconds

        def lp_ddp_local() -> float:  # Lightning's arithmetic: BatchNorm per rank
            return lp_ddp(sync=False)

        def lt_ddp() -> float:
            out = lightning_ddp(npz, args.batch_size, args.workers)
            ddp_epoch["lightning"].append(len(x) / out["epoch_seconds"])
            return len(x) / float(out["seconds"])

        lp_ddp()  # warm-up
        lt_ddp()
        ddp_epoch = {"lp.fit": [], "lp.fit per-rank BN": [], "lightning": []}
        ddp_repeats = args.ddp_repeats or args.repeats
        print(f"DDP {args.workers} processes x 1 thread, {ddp_repeats} rounds:", flush=True)
        arms = {"lp.fit": lp_ddp, "lp.fit per-rank BN": lp_ddp_local, "lightning": lt_ddp}
        ddp = interleave(arms, ddp_repeats)

    print()
    print(
        f"ConvNet ({param_count(new_model()):,} parameters) on {len(x)} MNIST images, batch "
        f"{args.batch_size}, {args.threads} threads, {args.repeats} interleaved rounds "
        f"(median samples/s, whole call timed); load average now "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    if single:
        print(f"  hand-written PyTorch loop     {describe(single['hand'])}")
        print(f"  lp.fit(quiet=True)            {describe(single['lp.fit'])}")
        print(f"  Lightning Trainer             {describe(single['lightning'])}")
        print(ratio_line("lp.fit / hand loop", single["lp.fit"], single["hand"], 0.97))
        print(ratio_line("lp.fit / Lightning", single["lp.fit"], single["lightning"], 1.0))
        print(f"  lp.fit and hand loop bit-identical weights after one epoch: {same}")
        print(
            f"  Lightning vs hand loop weights after one epoch: max |diff| {lt_diff:.2e} "
            "(not expected to be 0: Lightning draws its own random numbers)"
        )
    if ddp is None:
        why = "--no-ddp" if has_workers else "lp.fit has no `workers` argument yet"
        print(f"DDP arm skipped ({why})")
        return
    print(f"DDP, {args.workers} processes x 1 thread, global batch {args.batch_size} (gloo):")
    for title, times in (("whole call", ddp), ("steps only", ddp_epoch)):
        if title == "steps only":
            print("  steps only (lp: FitResult.samples_per_second; Lightning: epoch start..end):")
        print(f"  lp.fit(workers={args.workers})             {describe(times['lp.fit'])}")
        print(f"  lp.fit(..., sync_batchnorm=False) {describe(times['lp.fit per-rank BN'])}")
        print(f"  Lightning strategy='ddp'      {describe(times['lightning'])}")
        print(ratio_line(f"lp.fit / Lightning ({title})", times["lp.fit"],
                         times["lightning"], 1.0))  # fmt: skip
        print(ratio_line(f"lp.fit per-rank BN / Lightning ({title}, same arithmetic)",
                         times["lp.fit per-rank BN"], times["lightning"], 1.0))  # fmt: skip


if __name__ == "__main__":
    main()
