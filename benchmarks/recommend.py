"""Recommender benchmark on MovieLens-small: Lepton against scikit-surprise and implicit.

Measured in one run, on the same splits:

1. Rating prediction, 80/20 random split, several seeds: RMSE and fit time of
   ``lp.recommend.Recommender`` (explicit: the default ``"bayes"``, Gibbs-sampled
   Bayesian MF, and ``"sgd"``) beside surprise's SVD and SVD++; medians over seeds.
2. Ranking, per-user temporal split (each user's latest 20% of ratings held out): NDCG@10
   and precision@10 of our implicit ALS (torch), BPR, and PyPI implicit's ALS through our
   API, beside implicit's ALS run in the reference venv with its own settings. Every
   list is scored by the same functions (``lepton.recommend.ranking_metrics``), training
   items excluded, every held-out item relevant.
3. Incremental updates: fit on the training split less 1,000 ratings, then
   ``partial_fit`` those 1,000; time and test RMSE against a full refit on all of them.

The references run in their own venv (``benchmarks/.venvs/recommend``: ``pip install
scikit-surprise implicit``), created on first use; they get the splits as an ``.npz``.

Usage:
    .venv/bin/python benchmarks/recommend.py                 # 5 seeds, SVD++ on each
    .venv/bin/python benchmarks/recommend.py --seeds 2 --no-svdpp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import lepton as lp
from lepton.recommend import Recommender, ranking_metrics

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "recommend"
REQUIREMENTS = ["numpy<2.5", "pandas", "scikit-surprise", "implicit"]

REFERENCE = r"""
import json, sys, time
import numpy as np
d = np.load(sys.argv[1]); task = sys.argv[2]; out = {}
if task == "rating":
    import pandas as pd
    from surprise import SVD, SVDpp, Dataset, Reader
    reader = Reader(rating_scale=(0.5, 5.0))
    frame = pd.DataFrame({"u": d["tr_u"], "i": d["tr_i"], "r": d["tr_r"]})
    trainset = Dataset.load_from_df(frame, reader).build_full_trainset()
    test = list(zip(d["te_u"].tolist(), d["te_i"].tolist(), d["te_r"].tolist()))
    algos = [("surprise SVD", SVD(random_state=int(d["seed"])))]  # defaults: 100 factors
    if int(d["svdpp"]):
        algos.append(("surprise SVD++", SVDpp(random_state=int(d["seed"]))))
    for name, algo in algos:
        t = time.perf_counter(); algo.fit(trainset); fit_s = time.perf_counter() - t
        err = np.array([algo.predict(u, i, r).est - r for u, i, r in test])
        out[name] = {"rmse": float(np.sqrt(np.mean(err ** 2))), "fit_s": fit_s}
else:
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    nu, ni = int(d["n_users"]), int(d["n_items"])
    m = sp.csr_matrix((np.ones(len(d["tr_u"]), np.float32), (d["tr_u"], d["tr_i"])), shape=(nu, ni))
    als = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15, random_state=0)
    t = time.perf_counter(); als.fit(m, show_progress=False); fit_s = time.perf_counter() - t
    users = np.unique(d["te_u"])
    ids, _ = als.recommend(users, m[users], N=10, filter_already_liked_items=True)
    out["implicit ALS"] = {"lists": {int(u): [int(i) for i in row] for u, row in zip(users, ids)},
                           "fit_s": fit_s}
print(json.dumps(out))
"""


def ensure_venv() -> Path | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (pip install {' '.join(REQUIREMENTS)}) ...", flush=True)
        VENV.parent.mkdir(parents=True, exist_ok=True)
        (VENV.parent / ".gitignore").write_text("*\n")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-qq", *REQUIREMENTS])
        if done.returncode != 0:
            print("the reference venv could not be built; reporting Lepton only")
            return None
    return python


def reference(python: Path | None, task: str, arrays: dict[str, np.ndarray]) -> dict:
    if python is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.npz"
        np.savez(path, **arrays)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [str(python), "-c", REFERENCE, str(path), task], capture_output=True, text=True,
            env=env,
        )  # fmt: skip
    if done.returncode != 0:
        print(f"reference {task} failed:\n{done.stderr[-2000:]}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


EXPLICIT = {"lepton bayes (default, torch)": {}, "lepton MF sgd (torch)": {"algorithm": "sgd"}}


def rating_benchmark(ratings, python, seeds: int, svdpp: bool, first: int = 0) -> None:
    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in range(first, first + seeds):
        train, test = ratings.split(0.2, seed=seed)
        now = {}
        for name, options in EXPLICIT.items():
            t = time.perf_counter()
            rec = Recommender(seed=seed, **options).fit(train)
            fit_s = time.perf_counter() - t
            rows.setdefault(name, []).append((rec.score(test)["rmse"], fit_s))
            now[name] = rows[name][-1][0]
        arrays = {"tr_u": train.user, "tr_i": train.item, "tr_r": train.rating,
                  "te_u": test.user, "te_i": test.item, "te_r": test.rating,
                  "seed": np.array(seed), "svdpp": np.array(int(svdpp))}  # fmt: skip
        for name, res in reference(python, "rating", arrays).items():
            rows.setdefault(name, []).append((res["rmse"], res["fit_s"]))
            now[name] = res["rmse"]
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in now.items()), flush=True)
    print("\n| model | RMSE median | mean ± sd | per seed | fit s (median) |")
    print("|---|---|---|---|---|")
    for name, vals in rows.items():
        r = np.array([v[0] for v in vals])
        s = np.array([v[1] for v in vals])
        each = " ".join(f"{x:.4f}" for x in r)
        print(f"| {name} | {np.median(r):.4f} | {r.mean():.4f} ± {r.std():.4f} | {each} | "
              f"{np.median(s):.1f} |")  # fmt: skip


IMPLICIT = {
    "lepton ALS (default, torch)": {},
    "lepton BPR (torch)": {"algorithm": "bpr"},
    "PyPI implicit ALS through lepton (algorithm='implicit-als')": {"algorithm": "implicit-als"},
}


def ranking_benchmark(ratings, python) -> None:
    train, test = ratings.temporal_split(0.2)
    relevant: dict[int, list[int]] = {}
    for u, i in zip(test.user.tolist(), test.item.tolist(), strict=True):
        relevant.setdefault(u, []).append(i)
    results = {}
    for name, options in IMPLICIT.items():
        rec = Recommender("implicit", **options)
        t = time.perf_counter()
        rec.fit(train)
        fit_s = time.perf_counter() - t
        lists = {u: [i for i, _ in rec.recommend(u, 10)] for u in relevant}
        results[name] = (ranking_metrics(lists, relevant, 10), fit_s)
    users, u_idx = np.unique(np.concatenate([train.user, test.user]), return_inverse=True)
    items, i_idx = np.unique(np.concatenate([train.item, test.item]), return_inverse=True)
    n = len(train)
    arrays = {"tr_u": u_idx[:n], "tr_i": i_idx[:n], "te_u": u_idx[n:], "te_i": i_idx[n:],
              "n_users": np.array(len(users)), "n_items": np.array(len(items))}  # fmt: skip
    for name, res in reference(python, "ranking", arrays).items():
        lists = {
            int(users[int(u)]): [int(items[i]) for i in row] for u, row in res["lists"].items()
        }
        results[name] = (ranking_metrics(lists, relevant, 10), res["fit_s"])
    print("\n| model (per-user temporal split) | NDCG@10 | precision@10 | recall@10 | fit s |")
    print("|---|---|---|---|---|")
    for name, (m, s) in results.items():
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['precision@10']:.4f} | "
              f"{m['recall@10']:.4f} | {s:.1f} |")  # fmt: skip


def partial_fit_benchmark(ratings, settings: dict, n_new: int = 1000) -> None:
    """The default explicit recommender (``settings`` empty) unless told otherwise."""
    train, test = ratings.split(0.2, seed=0)
    order = np.random.default_rng(1).permutation(len(train))
    base, new = train.take(np.sort(order[n_new:])), train.take(np.sort(order[:n_new]))
    rec = Recommender(**settings).fit(base)
    before = rec.score(test)["rmse"]
    t = time.perf_counter()
    rec.partial_fit(new)
    partial_s = time.perf_counter() - t
    folded = rec.score(test)["rmse"]
    t = time.perf_counter()
    rec.refit()
    refit_s = time.perf_counter() - t
    refit = rec.score(test)["rmse"]
    print(f"\n| {n_new} new ratings | time s | test RMSE |\n|---|---|---|")
    print(f"| before (fit on the rest) | - | {before:.4f} |")
    print(f"| partial_fit | {partial_s:.3f} | {folded:.4f} |")
    print(f"| full refit | {refit_s:.1f} | {refit:.4f} |")
    print(f"partial_fit / refit time: {100 * partial_s / refit_s:.2f}% (target <= 1%); "
          f"RMSE difference {folded - refit:+.4f} (target within 0.005)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument("--no-svdpp", action="store_true", help="skip SVD++ (slow)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--parts", nargs="+", default=["rating", "ranking", "partial"],
        choices=["rating", "ranking", "partial"],
    )  # fmt: skip
    parser.add_argument("--algorithm", default=None, help="partial_fit part: bayes or sgd")
    parser.add_argument("--bayes-epochs", type=int, default=None, help="Gibbs sweeps")
    parser.add_argument("--bayes-samples", type=int, default=None, help="samples kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bayes = {"epochs": args.bayes_epochs, "samples": args.bayes_samples}
    EXPLICIT["lepton bayes (default, torch)"] = {k: v for k, v in bayes.items() if v}
    settings = {} if args.algorithm is None else {"algorithm": args.algorithm}
    ratings = lp.data.load("movielens", split="all")
    python = None if args.no_reference else ensure_venv()
    print(f"MovieLens-small: {len(ratings)} ratings, {ratings.n_users} users, "
          f"{ratings.n_items} movies; torch threads {args.threads}", flush=True)  # fmt: skip
    if "partial" in args.parts:
        partial_fit_benchmark(ratings, settings)
    if "ranking" in args.parts:
        ranking_benchmark(ratings, python)
    if "rating" in args.parts:
        rating_benchmark(ratings, python, args.seeds, not args.no_svdpp, args.first_seed)


if __name__ == "__main__":
    main()
