"""Federated learning on non-IID MNIST: FedAvg vs FedProx (Flower), and a real deployment.

5 clients hold a Dirichlet(0.5) split of the first N real MNIST training images (each
client sees a few dominant classes); every round all 5 train the seed ConvNet for one
local epoch with ``lp.fit`` (AdamW, lr 1e-3, batch 32) and Flower aggregates. Measured
per round: the global model's accuracy on the 10,000 MNIST test images, clients, payload
bytes each way, wall time; and the round at which 97% is first reached.

Runs, in one process, one after the other:

* FedAvg and FedProx (mu = 0.01) in Flower's Simulation Runtime (Ray actors);
* FedAvg in real-process mode: a Flower SuperLink and 5 SuperNodes as separate processes
  on 127.0.0.1 (``mode="processes"``);
* the reference: the same ConvNet trained centrally (``lp.fit``) on all N images for
  as many epochs as the federated runs had rounds' worth of client epochs (the ceiling
  that federated averaging on non-IID data approaches).

    .venv/bin/python benchmarks/federated.py            # full (~45 min on 2 busy cores)
    .venv/bin/python benchmarks/federated.py --quick    # smoke (~5 min)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
# runs are tracked in a fresh LEPTON_HOME (SQLite), not the user's
os.environ["LEPTON_HOME"] = tempfile.mkdtemp(prefix="lepton-bench-fl-")

import lepton as lp
from lepton.federated import FederatedResult, label_counts, partition
from lepton.train.recipe import build_model

SEED_CONVNET = {"num_filters": [32, 64, 128], "kernel_size": 3, "dropout": 0.5}
TARGET = 0.97
OUT = Path(__file__).parent / "results" / "federated.json"


def _fed(
    strategy: str, mode: str, parts: list[Any], train: Any, test: Any, rounds: int
) -> FederatedResult:
    model = build_model("convnet", train, SEED_CONVNET)
    started = time.perf_counter()

    def show(r: Any) -> None:
        print(f"  [{strategy}/{mode}] round {r.round}: acc {r.accuracy:.4f} loss {r.loss:.4f} "
              f"clients {r.clients_replied}/{r.clients_sampled} "
              f"{(r.bytes_up + r.bytes_down) / 1e6:.1f} MB {r.seconds:.1f} s "
              f"(t={time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip

    return lp.federated.run(
        model, parts, test=test, rounds=rounds, strategy=strategy, mode=mode,  # type: ignore[arg-type]
        fraction_fit=1.0, min_fit=len(parts), min_available=len(parts), local_epochs=1,
        lr=1e-3, batch_size=32, proximal_mu=0.01, seed=0, on_round=show,
        run_name=f"bench-fl-{strategy}-{mode}", round_timeout=900, timeout=4 * 3600,
    )  # fmt: skip


def _summary(result: FederatedResult) -> dict[str, Any]:
    trained = result.rounds[1:]
    return {
        "strategy": result.strategy,
        "mode": result.mode,
        "accuracy": [r.accuracy for r in result.rounds],
        "loss": [r.loss for r in result.rounds],
        "clients": [r.clients_replied for r in trained],
        "rounds_to_97": result.rounds_to(TARGET),
        "mb_up_per_round": sum(r.bytes_up for r in trained) / len(trained) / 1e6,
        "mb_down_per_round": sum(r.bytes_down for r in trained) / len(trained) / 1e6,
        "seconds_per_round": sum(r.seconds for r in trained) / len(trained),
        "wall_seconds": result.seconds,
        "run_id": result.run_id,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--rows", type=int, default=None, help="training images (default 20000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 6)")
    ap.add_argument("--process-rounds", type=int, default=None, help="rounds in process mode")
    args = ap.parse_args()
    rows = args.rows or (3000 if args.quick else 20000)
    rounds = args.rounds or (2 if args.quick else 6)
    p_rounds = args.process_rounds or (2 if args.quick else 3)
    clients = 5

    train = lp.data.load("mnist", split="train").subset(slice(0, rows))
    test = lp.data.load("mnist", split="test")
    if args.quick:
        test = test.subset(slice(0, 2000))
    parts = partition(train, clients, scheme="dirichlet", alpha=0.5, seed=0)
    print(f"MNIST {rows} train rows over {clients} clients, Dirichlet(0.5); test {len(test)}")
    for i, counts in enumerate(label_counts(parts)):
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        print(f"  client {i}: {len(parts[i])} rows, top classes {top}")

    results: dict[str, Any] = {"rows": rows, "clients": clients, "alpha": 0.5, "runs": []}
    for strategy, mode, n in (("fedavg", "simulation", rounds), ("fedprox", "simulation", rounds),
                              ("fedavg", "processes", p_rounds)):  # fmt: skip
        print(f"{strategy} ({mode}), {n} rounds", flush=True)
        results["runs"].append(_summary(_fed(strategy, mode, parts, train, test, n)))

    print(f"reference: central lp.fit, {rounds} epochs on all {rows} rows", flush=True)
    central = build_model("convnet", train, SEED_CONVNET)
    started = time.perf_counter()
    curve = []
    for epoch in range(rounds):
        lp.fit(central, train, epochs=1, batch_size=32, lr=1e-3, seed=epoch, quiet=True)
        curve.append(lp.evaluate(central, test)["accuracy"])
        print(f"  [central] epoch {epoch + 1}: acc {curve[-1]:.4f}", flush=True)
    results["central"] = {
        "accuracy": curve, "wall_seconds": time.perf_counter() - started,
        "epochs_to_97": next((i + 1 for i, a in enumerate(curve) if a >= TARGET), None),
    }  # fmt: skip

    print()
    names = [f"{r['strategy']}/{r['mode'][:4]}" for r in results["runs"]]
    head = f"{'':>6}" + "".join(f"{n:>16}" for n in names)
    print(head + f"{'central (epoch)':>18}")
    for i in range(rounds + 1):
        line = f"{i:>6}"
        for r in results["runs"]:
            acc = r["accuracy"][i] if i < len(r["accuracy"]) else None
            line += f"{acc:>16.4f}" if acc is not None else f"{'':>16}"
        line += f"{curve[i - 1]:>18.4f}" if i > 0 else f"{'':>18}"
        print(line)
    print()
    for r in results["runs"]:
        print(f"{r['strategy']:>8} {r['mode']:<10} rounds to 97%: {r['rounds_to_97']}, "
              f"{r['mb_up_per_round']:.2f} MB up + {r['mb_down_per_round']:.2f} MB down per "
              f"round, {r['seconds_per_round']:.1f} s per round, {r['wall_seconds']:.0f} s "
              f"in all")  # fmt: skip
    c = results["central"]
    print(f" central lp.fit     epochs to 97%: {c['epochs_to_97']}, {c['wall_seconds']:.0f} s")
    if not args.quick:
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1))
        print(f"written {OUT}")


if __name__ == "__main__":
    main()
