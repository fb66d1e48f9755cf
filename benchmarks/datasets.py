"""Versioned datasets on real data: register / load / diff, beside the raw floor.

For MNIST's 60,000 training images (npz) and the same pixels as a 784-column table
(Parquet), it times ``lp.data.register`` and ``lp.data.load("name@N")`` beside writing and
reading the same arrays with ``np.savez``/``np.load`` and pandas' ``to_parquet``/
``read_parquet`` (the floor: no hashing, no database, no checks), in the same run; then it
diffs two real versions: MNIST with 1,000 images replaced by Fashion-MNIST ones, and
prints what the diff finds (rows added/removed, and the distribution test).

Usage:
    .venv/bin/python benchmarks/datasets.py [--rows 60000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _median(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = tempfile.mkdtemp(prefix="lepton-bench-datasets-")
    os.environ["LEPTON_HOME"] = home
    import pandas as pd

    import lepton as lp

    mnist = lp.data.load("mnist", split="train").subset(slice(0, args.rows))
    x, y = mnist.features.numpy(), mnist.targets.numpy()  # type: ignore[union-attr]
    print(f"MNIST train, {len(mnist):,} images, {x.nbytes / 1e6:.0f} MB of float32 pixels")
    print(f"{'what':<44} {'lepton':>10} {'floor':>10}")

    def raw_npz() -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, features=x, targets=y)
        return buffer.getvalue()

    # register: the first call stores; later calls of the same content return the version
    first = time.perf_counter()
    version = lp.data.register(mnist, "mnist-bench")
    t_register = time.perf_counter() - first
    t_again, _ = _median(lambda: lp.data.register(mnist, "mnist-bench"), args.repeat)
    t_raw_write, blob = _median(raw_npz, args.repeat)
    print(f"{'register images (npz) / np.savez':<44} {t_register:>9.2f}s {t_raw_write:>9.2f}s")
    print(f"{'register the same content again':<44} {t_again:>9.2f}s {'':>10}")
    t_load, back = _median(lambda: lp.data.load("mnist-bench@1"), args.repeat)
    t_raw_read, _ = _median(lambda: np.load(io.BytesIO(blob))["features"].sum(), args.repeat)
    assert back.fingerprint() == mnist.fingerprint()
    print(f"{'load name@1 (bit for bit) / np.load':<44} {t_load:>9.2f}s {t_raw_read:>9.2f}s")
    print(f"  stored {version.size / 1e6:.0f} MB as {version.format}")

    table = lp.data.Dataset(x.reshape(len(x), -1), y, classes=mnist.classes)
    frame = pd.DataFrame(table.features.numpy(), columns=[f"x{i}" for i in range(784)])
    frame["target"] = y
    t_reg_table = time.perf_counter()
    tv = lp.data.register(table, "mnist-table")
    t_reg_table = time.perf_counter() - t_reg_table
    path = os.path.join(home, "floor.parquet")
    t_pq_write, _ = _median(lambda: frame.to_parquet(path), args.repeat)
    t_load_table, _ = _median(lambda: lp.data.load("mnist-table@1"), args.repeat)
    t_pq_read, _ = _median(lambda: pd.read_parquet(path), args.repeat)
    print(
        f"{'register a 784-column table / to_parquet':<44} {t_reg_table:>9.2f}s {t_pq_write:>9.2f}s"
    )
    print(f"{'load the table / read_parquet':<44} {t_load_table:>9.2f}s {t_pq_read:>9.2f}s")
    print(f"  stored {tv.size / 1e6:.0f} MB as {tv.format}")

    fashion = lp.data.load("fashion-mnist", split="train")
    mixed_x, mixed_y = mnist.features.clone(), mnist.targets.clone()  # type: ignore[union-attr]
    swap = torch.randperm(len(mnist), generator=torch.Generator().manual_seed(0))[:1000]
    mixed_x[swap] = fashion.features[:1000]
    mixed_y[swap] = fashion.targets[:1000]  # type: ignore[index]
    mixed = lp.data.Dataset(mixed_x, mixed_y, classes=mnist.classes)
    lp.data.register(mixed, "mnist-bench", derived_from="mnist-bench@1")
    t_diff = time.perf_counter()
    found = lp.data.diff("mnist-bench@1", "mnist-bench@2")
    t_diff = time.perf_counter() - t_diff
    print(f"\ndiff mnist-bench@1 -> @2 (1,000 images swapped for Fashion-MNIST): {t_diff:.1f}s")
    print(found)
    drift = found.distribution or {}
    print(f"  expected +1000 added, -1000 removed; MMD drift: {drift.get('drifted')}")


if __name__ == "__main__":
    main()
