"""Registry latency: register + load of the seed ConvNet, and listing 10,000 versions.

Reference beside each figure, measured in the same run: writing and reading the same
weights as a bare safetensors file (the floor: what any registry must at least do).
Everything runs against a fresh LEPTON_HOME (SQLite + local artifact store).

    python benchmarks/registry.py [--repeats 30] [--versions 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--versions", type=int, default=10_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lepton-bench-"))
    os.environ["LEPTON_HOME"] = str(home)

    import safetensors.torch
    import torch

    import lepton as lp
    from lepton import registry
    from lepton.storage import open_database
    from lepton.storage.schema import ModelVersionRow

    torch.manual_seed(0)
    model = lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    reg, load, raw_save, raw_load = [], [], [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        version = lp.register(model, "mnist-convnet", metrics={"accuracy": 0.99})
        reg.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lp.load_model(version.ref)
        load.append(time.perf_counter() - t0)
        path = home / f"raw-{i}.safetensors"
        t0 = time.perf_counter()
        safetensors.torch.save_file(state, str(path))
        raw_save.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.load_state_dict(safetensors.torch.load_file(str(path)))
        raw_load.append(time.perf_counter() - t0)

    # 10,000 versions of one model: rows inserted in bulk (registering 10k real models
    # would measure the same per-version cost as above, 10k times over).
    db = open_database()
    with db.session() as s:
        s.add_all(
            ModelVersionRow(
                model_name="mnist-convnet",
                version=args.repeats + 1 + i,
                state="ready",
                manifest={"metrics": {"accuracy": 0.9}},
                created_at=time.time(),
            )
            for i in range(args.versions)
        )
    listing = []
    for _ in range(5):
        t0 = time.perf_counter()
        versions = registry.list_versions("mnist-convnet")
        listing.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    newest = registry.resolve("mnist-convnet")
    resolve_s = time.perf_counter() - t0

    ms = 1000.0
    size_mb = sum(v.numel() * v.element_size() for v in state.values()) / 1e6

    def row(label: str, values: list[float], floor: list[float], floor_label: str) -> str:
        p50, p99 = ms * statistics.median(values), ms * pct(values, 0.99)
        ref = ms * statistics.median(floor)
        ours = f"  {label:<15} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms"
        return f"{ours}   | {floor_label} p50 {ref:5.1f} ms"

    print()
    print(
        f"seed ConvNet ({size_mb:.2f} MB of weights), {args.repeats} repeats, SQLite + local store"
    )
    print(row("lp.register", reg, raw_save, "bare save_file"))
    print(row("lp.load_model", load, raw_load, "bare load_file"))
    listed = ms * statistics.median(listing)
    print(f"  list_versions ({len(versions):,} versions)  median {listed:7.1f} ms")
    print(f"  resolve newest (version {newest.version})         {ms * resolve_s:7.1f} ms")


if __name__ == "__main__":
    main()
