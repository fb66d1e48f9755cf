"""Monitoring benchmark: drift detection power and false alarms, and anomaly detectors on
UCR series 135, measured in one run.

1. Drift on images (MNIST, ``lp.monitor.drift``): a reference of ``n`` MNIST training
   images against a current sample of ``n``: the null (a disjoint sample of the same
   images), Fashion-MNIST mixed in at 5/10/50%, contrast scaled by 0.7, the class "1"
   removed. Each test over ``--reps`` random draws; the figure is the share of draws
   called "drift" at alpha = 0.05 (on the null: the false-positive rate; elsewhere: the
   power). Tests side by side: MMD on raw pixels (RBF kernel, median heuristic,
   permutation p-value), MMD on 32 PCA components fitted on the reference (``embed=``),
   a per-pixel Kolmogorov-Smirnov test with Bonferroni correction (the scipy baseline,
   784 tests), and chi-square on the labels (``targets=True``; what a model's predicted
   classes would show).
2. Drift on a table (breast cancer, 30 features): two disjoint halves (null), and one
   feature scaled by 1.1 / 1.25 / 1.5: KS (Bonferroni), PSI > 0.2 and Wasserstein > 0.1.
3. UCR anomaly archive 135 (``lp.data.load("ucr-135")``): each detector's top anomaly in
   the test part, correct when inside the labelled region +-100 points (the archive's
   rule), and its time. With ``--stumpy`` the matrix profile of STUMPY (the maintained
   library; its own venv, ``benchmarks/.venvs/stumpy``) runs beside ours, numba
   compilation time included and shown apart.

Usage:
    .venv/bin/python benchmarks/monitor.py                # ~5 min on 2 busy cores
    .venv/bin/python benchmarks/monitor.py --reps 5 --stumpy
"""

from __future__ import annotations

import os

# One BLAS thread: on a shared 2-core box, threaded BLAS made a 500 x 784 SVD take 7 s.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lepton as lp
from lepton.monitor import AnomalyDetector, drift, subsequences

HERE = Path(__file__).resolve().parent
STUMPY_VENV = HERE / ".venvs" / "stumpy"


# --- 1. images -------------------------------------------------------------------------


def image_scenarios(
    mnist: np.ndarray, labels: np.ndarray, fashion: np.ndarray, n: int, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (reference, ref labels, current, current labels), disjoint MNIST draws."""
    order = rng.permutation(len(mnist))
    ref_idx, pool = order[:n], order[n:]
    ref, ref_y = mnist[ref_idx], labels[ref_idx]

    def draw(count: int, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        candidates = pool if keep is None else pool[keep(labels[pool])]
        return rng.choice(candidates, count, replace=False)

    out = {}
    idx = draw(n)
    out["null (disjoint MNIST)"] = (ref, ref_y, mnist[idx], labels[idx])
    for share in (0.05, 0.10, 0.50):
        k = round(n * share)
        idx = draw(n - k)
        f = rng.choice(len(fashion), k, replace=False)
        current = np.concatenate([mnist[idx], fashion[f]])
        cur_y = np.concatenate([labels[idx], rng.integers(0, 10, k)])  # a model's guesses
        out[f"Fashion-MNIST {share:.0%}"] = (ref, ref_y, current, cur_y)
    idx = draw(n)
    out["contrast x0.7"] = (ref, ref_y, mnist[idx] * 0.7, labels[idx])
    idx = draw(n, lambda y: y != 1)
    out['class "1" removed'] = (ref, ref_y, mnist[idx], labels[idx])
    return out


def pca_embedder(reference: np.ndarray, k: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    flat = reference.reshape(len(reference), -1)
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:k].T

    def embed(batch: np.ndarray) -> np.ndarray:
        return np.asarray((batch.reshape(len(batch), -1) - mean) @ basis)

    return embed


def _image_test(
    test: str,
    ref: np.ndarray,
    ref_y: np.ndarray,
    cur: np.ndarray,
    cur_y: np.ndarray,
    permutations: int,
    seed: int,
) -> bool:
    if test == "MMD pixels":
        return drift(ref, cur, permutations=permutations, seed=seed).drifted
    if test == "MMD PCA-32":
        embed = pca_embedder(ref)
        return drift(ref, cur, embed=embed, permutations=permutations, seed=seed).drifted
    if test == "KS per pixel":
        return drift(ref.reshape(len(ref), -1), cur.reshape(len(cur), -1), method="ks").drifted
    return drift({"label": ref_y}, {"label": cur_y}, categorical=["label"]).drifted


def bench_images(reps: int, n: int, permutations: int) -> dict[str, dict[str, Any]]:
    mnist_ds = lp.data.load("mnist", split="train")
    mnist = mnist_ds.features.numpy()
    assert mnist_ds.targets is not None
    labels = mnist_ds.targets.numpy()
    fashion = lp.data.load("fashion-mnist", split="test").features.numpy()
    tests = ("MMD pixels", "MMD PCA-32", "KS per pixel", "chi2 labels")
    hits: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = dict.fromkeys(tests, 0.0)
    for rep in range(reps):
        rng = np.random.default_rng(1000 + rep)
        for name, (ref, ref_y, cur, cur_y) in image_scenarios(
            mnist, labels, fashion, n, rng
        ).items():
            row = hits.setdefault(name, dict.fromkeys(tests, 0))
            for test in tests:
                t0 = time.perf_counter()
                row[test] += int(_image_test(test, ref, ref_y, cur, cur_y, permutations, rep))
                seconds[test] += time.perf_counter() - t0
        print(f"  images: rep {rep + 1}/{reps} done", flush=True)
    calls = reps * len(hits)
    return {
        "rates": {s: {t: c / reps for t, c in row.items()} for s, row in hits.items()},
        "seconds_per_test": {t: s / calls for t, s in seconds.items()},
    }


# --- 2. a table ------------------------------------------------------------------------


def bench_table(reps: int) -> dict[str, dict[str, float]]:
    data = lp.data.load("breast-cancer", split="all").features.numpy().astype(np.float64)
    methods = ("ks", "psi", "wasserstein")
    scenarios = ("null (disjoint halves)", "x1.1", "x1.25", "x1.5")
    hits = {s: dict.fromkeys(methods, 0) for s in scenarios}
    for rep in range(reps):
        rng = np.random.default_rng(2000 + rep)
        order = rng.permutation(len(data))
        ref, cur = data[order[: len(data) // 2]], data[order[len(data) // 2 :]]
        feature = int(rng.integers(0, data.shape[1]))
        for scenario in scenarios:
            current = cur.copy()
            if scenario != scenarios[0]:
                current[:, feature] *= float(scenario[1:])
            for method in methods:
                report = drift(ref, current, method=method)  # type: ignore[arg-type]
                hits[scenario][method] += int(report.drifted)
    return {s: {m: c / reps for m, c in row.items()} for s, row in hits.items()}


# --- 3. UCR 135 ------------------------------------------------------------------------


def _top_in(scores: np.ndarray, begin: int) -> int:
    return begin + int(np.argmax(scores[begin:]))


def bench_ucr(m: int) -> list[dict[str, Any]]:
    series = lp.data.load("ucr-135", split="all")
    values, begin = series.values, series.train_end
    rows = []

    def record(name: str, run: Callable[[], int]) -> None:
        t0 = time.perf_counter()
        location = run()
        elapsed = time.perf_counter() - t0
        rows.append(
            {
                "detector": name,
                "location": location,
                "hit": series.hit(location),
                "seconds": round(elapsed, 2),
            }
        )
        print(f"  ucr: {name}: {location} ({elapsed:.1f} s)", flush=True)

    record(
        f"discord, self-join (m={m})",
        lambda: _top_in(AnomalyDetector("discord", window=m).score(values), begin),
    )

    def ab_join() -> int:
        det = AnomalyDetector("discord", window=m).fit(values[:begin])
        return begin + int(np.argmax(det.score(values[begin:])))

    record(f"discord, test vs train + self (m={m})", ab_join)

    def windows(method: str) -> int:
        train = subsequences(values[:begin], m)
        test = subsequences(values[begin:], m)
        det = AnomalyDetector(method, window=50).fit(train)  # type: ignore[arg-type]
        return begin + int(np.argmax(det.score(test))) + m // 2

    record(f"isolation_forest on subsequences (m={m})", lambda: windows("isolation_forest"))
    record(f"mad on subsequences (m={m})", lambda: windows("mad"))

    def mad_points() -> int:
        det = AnomalyDetector("mad").fit(values[:begin])
        return begin + int(np.argmax(det.score(values[begin:])))

    record("mad on points (fit on train)", mad_points)

    def hst_stream() -> int:
        shingles = subsequences(values, 16)
        det = AnomalyDetector("hst", window=250, seed=0)
        scores = np.array([det.update(row).score for row in shingles])
        return _top_in(scores, begin - 15) + 15

    record("hst streaming (shingles of 16)", hst_stream)

    def change(method: str) -> int:
        det = AnomalyDetector(method)  # type: ignore[arg-type]
        alarms = [r.index for r in map(det.update, values) if r.alarm and r.index >= begin]
        return alarms[0] if alarms else -1

    record("adwin, first change in test", lambda: change("adwin"))
    record("page_hinkley, first change in test", lambda: change("page_hinkley"))
    return rows


STUMPY_SCRIPT = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import stumpy
t1 = time.perf_counter()
values = np.load(sys.argv[1])
m, begin = int(sys.argv[2]), int(sys.argv[3])
mp = stumpy.stump(values, m)[:, 0].astype(float)
t2 = time.perf_counter()
mp = stumpy.stump(values, m)[:, 0].astype(float)
t3 = time.perf_counter()
print(json.dumps({"profile": mp.tolist(), "import": t1 - t0, "first": t2 - t1, "second": t3 - t2,
                  "version": stumpy.__version__}))
"""


def bench_stumpy(m: int) -> dict[str, Any] | None:
    python = STUMPY_VENV / "bin" / "python"
    if not python.exists():
        print(f"  creating {STUMPY_VENV} (pip install stumpy)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(STUMPY_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "stumpy"], check=True)
    series = lp.data.load("ucr-135", split="all")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ucr.npy"
        np.save(path, series.values)
        env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
        done = subprocess.run(
            [str(python), "-c", STUMPY_SCRIPT, str(path), str(m), str(series.train_end)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
    out = json.loads(done.stdout)
    theirs = np.array(out.pop("profile"))
    t0 = time.perf_counter()
    ours = lp.monitor.matrix_profile(series.values, m)
    out["ours_seconds"] = time.perf_counter() - t0
    out["max_abs_difference"] = float(np.max(np.abs(theirs - ours)))
    top = int(np.argmax(theirs[series.train_end :])) + series.train_end + m // 2
    out["stumpy_top"], out["stumpy_hit"] = top, series.hit(top)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--n", type=int, default=500, help="images per sample")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--m", type=int, default=100, help="subsequence length on UCR 135")
    parser.add_argument("--stumpy", action="store_true", help="also run STUMPY (own venv)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
    started = time.perf_counter()
    results: dict[str, Any] = {"reps": args.reps, "n": args.n}

    print(f"== 1. drift on MNIST images: n={args.n} per sample, {args.reps} draws ==")
    images = bench_images(args.reps, args.n, args.permutations)
    results["images"] = images
    tests = list(next(iter(images["rates"].values())))
    print(f"{'scenario':<24}" + "".join(f"{t:>14}" for t in tests))
    for scenario, rates in images["rates"].items():
        print(f"{scenario:<24}" + "".join(f"{rates[t]:>14.2f}" for t in tests))
    print(
        f"{'seconds per test':<24}"
        + "".join(f"{images['seconds_per_test'][t]:>14.3f}" for t in tests)
    )

    print(f"\n== 2. drift on breast cancer (30 features, 284 vs 285 rows), {args.reps} draws ==")
    table = bench_table(args.reps)
    results["table"] = table
    print(f"{'scenario':<24}{'ks':>10}{'psi':>10}{'wasserstein':>14}")
    for scenario, rates in table.items():
        print(
            f"{scenario:<24}{rates['ks']:>10.2f}{rates['psi']:>10.2f}{rates['wasserstein']:>14.2f}"
        )

    print("\n== 3. UCR anomaly archive 135: top anomaly in the test part, region 4187-4198 ==")
    ucr = bench_ucr(args.m)
    results["ucr"] = ucr
    print(f"{'detector':<44}{'location':>10}{'hit':>6}{'seconds':>9}")
    for row in ucr:
        hit = "yes" if row["hit"] else "no"
        print(f"{row['detector']:<44}{row['location']:>10}{hit:>6}{row['seconds']:>9.2f}")
    if args.stumpy:
        stumpy = bench_stumpy(args.m)
        results["stumpy"] = stumpy
        print(
            f"STUMPY {stumpy['version']} stump: top {stumpy['stumpy_top']} "
            f"(hit: {stumpy['stumpy_hit']}); import {stumpy['import']:.1f} s, first call "
            f"(numba compiles) {stumpy['first']:.1f} s, second call {stumpy['second']:.2f} s; "
            f"ours {stumpy['ours_seconds']:.2f} s; max |difference| "
            f"{stumpy['max_abs_difference']:.2e}"
        )
    results["seconds"] = time.perf_counter() - started
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
