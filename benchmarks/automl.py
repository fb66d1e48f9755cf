"""``lp.automl`` vs FLAML at the same time budget, on five real tabular tasks.

Both tools get the same training rows and the same time budget, one thread each
(``n_jobs=1``: steady timing on a shared 2-core machine), and each runs in a fresh
process of its own (so both pay their imports inside their budget). The held-out test
rows are scored by this script, the same way for both: accuracy for classification,
R² for regression. FLAML runs in its own virtual environment (``benchmarks/.venvs/flaml``,
plain ``pip install 'flaml[automl]' scikit-learn``, no torch), created on first use.

Tasks (train/test splits fixed by seed 0, stratified for classification):

- ``breast-cancer``, ``wine``, ``digits``, ``diabetes``: the catalog's 80/20 splits of
  scikit-learn's bundled files (``lp.data.load(name, split=...)``);
- ``fashion-7x7``: 20,000 Fashion-MNIST training images (a seed-0 random subset of the
  60,000), each 28x28 image average-pooled over 4x4 blocks to 7x7 = 49 features in
  [0, 1], split 80/20 stratified (seed 0): 16,000 training rows, 4,000 test rows.

Usage::

    .venv/bin/python benchmarks/automl.py                # 30 s per tool and task
    .venv/bin/python benchmarks/automl.py --quick        # 10 s, three small tasks
    .venv/bin/python benchmarks/automl.py --budget 60 --repeats 3 --tasks wine digits
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLAML_VENV = HERE / ".venvs" / "flaml"
FLAML_REQUIREMENTS = ("flaml[automl]==2.7.*", "scikit-learn")
TASKS = ("breast-cancer", "wine", "digits", "diabetes", "fashion-7x7")
QUICK_TASKS = ("breast-cancer", "wine", "diabetes")


# -- data (parent process, Lepton's venv) ----------------------------------------------------
def load_task(name: str) -> dict[str, Any]:
    """The task's train/test arrays, its kind and metric, and how it was built."""
    import lepton as lp

    if name == "fashion-7x7":
        import torch

        full = lp.data.load("fashion-mnist", split="train")
        rows = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:20_000]
        pooled = torch.nn.functional.avg_pool2d(full.features[rows], 4)  # (N, 1, 7, 7)
        data = lp.data.Dataset(pooled.reshape(len(rows), 49), full.targets[rows],
                               name="fashion-7x7", task="classification")  # fmt: skip
        train, test = data.split(test_size=0.2, seed=0)
    else:
        train, test = lp.data.load(name, split="train"), lp.data.load(name, split="test")
    task = train.task
    return {
        "x_train": train.features.reshape(len(train), -1).numpy().astype(np.float64),
        "y_train": train.targets.numpy(),
        "x_test": test.features.reshape(len(test), -1).numpy().astype(np.float64),
        "y_test": test.targets.numpy(),
        "task": task,
        "metric": "accuracy" if task == "classification" else "r2",
        "names": train.feature_names or [],
    }


def score(task: dict[str, Any], predictions: list[Any]) -> float:
    y, p = task["y_test"], np.asarray(predictions)
    if task["task"] == "classification":
        return float(np.mean(p.astype(np.int64) == y))
    residual = float(np.sum((y - p) ** 2))
    return 1.0 - residual / float(np.sum((y - y.mean()) ** 2))


# -- workers (one fresh process per run) -----------------------------------------------------
def lepton_worker(path: str, budget: float, seed: int) -> dict[str, Any]:
    data = np.load(path)
    began = time.perf_counter()
    import lepton as lp

    try:
        from lepton.tune import automl
    except ImportError:  # until the package re-exports it
        from lepton.tune._automl import automl
    names = [str(n) for n in data["names"]] or None
    x = data["x_train"]
    started = time.perf_counter()  # the budget covers the call, not the imports
    if names:  # a Dataset, so the feature report names the columns
        ds = lp.data.Dataset(x, data["y_train"], feature_names=names, name="bench",
                             task=str(data["task"]))  # fmt: skip
        result = automl(ds, budget_s=budget, seed=seed, quiet=True, n_jobs=1)
    else:
        result = automl((x, data["y_train"]), task=str(data["task"]), budget_s=budget,
                           seed=seed, quiet=True, n_jobs=1)  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "predictions": result.predict(data["x_test"]).tolist(),
        "seconds": seconds,
        "import_seconds": started - began,
        "best": f"{result.best.family} (cv {result.best.score:.4f})",
        "trials": len(result.leaderboard.rows),
    }


def flaml_worker(path: str, budget: float, seed: int) -> dict[str, Any]:
    data = np.load(path)
    began = time.perf_counter()
    from flaml import AutoML

    automl = AutoML()
    started = time.perf_counter()
    automl.fit(data["x_train"], data["y_train"], task=str(data["task"]), time_budget=budget,
               metric=str(data["metric"]), seed=seed, n_jobs=1, verbose=0)  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "predictions": automl.predict(data["x_test"]).tolist(),
        "seconds": seconds,
        "import_seconds": started - began,
        "best": f"{automl.best_estimator} (val {1 - automl.best_loss:.4f})",
        "trials": len(automl.config_history),
    }


# -- the FLAML venv --------------------------------------------------------------------------
def flaml_python() -> Path:
    python = FLAML_VENV / "bin" / "python"
    stamp = FLAML_VENV / "lepton-bench-stamp"
    if stamp.exists():
        return python
    print(f"creating {FLAML_VENV} (pip install {' '.join(FLAML_REQUIREMENTS)}) ...", flush=True)
    FLAML_VENV.parent.mkdir(parents=True, exist_ok=True)
    (FLAML_VENV.parent / ".gitignore").write_text("*\n")  # the venvs stay out of git
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(FLAML_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-qq", *FLAML_REQUIREMENTS], check=True)
    stamp.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return python


def run_worker(tool: str, path: Path, budget: float, seed: int) -> dict[str, Any]:
    python = flaml_python() if tool == "flaml" else Path(sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if tool == "lepton":
        env["LEPTON_HOME"] = tempfile.mkdtemp(prefix="lepton-bench-")
    command = [str(python), __file__, "--worker", tool, str(path), str(budget), str(seed)]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{tool} worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


# -- report ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=None, help="seconds per tool and task")
    parser.add_argument("--quick", action="store_true", help="10 s, three small tasks")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="seeds 0..N-1; medians shown")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tool, path, budget, seed = args.worker
        worker = lepton_worker if tool == "lepton" else flaml_worker
        print(json.dumps(worker(path, float(budget), int(seed))))
        return
    budget = args.budget or (10.0 if args.quick else 30.0)
    tasks = args.tasks or (QUICK_TASKS if args.quick else TASKS)
    flaml_python()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tasks:
            task = load_task(name)
            path = Path(tmp) / f"{name}.npz"
            np.savez(path, **{k: np.asarray(v) for k, v in task.items()})
            runs: dict[str, list[dict[str, Any]]] = {"lepton": [], "flaml": []}
            for seed in range(args.repeats):
                order = ("lepton", "flaml") if seed % 2 == 0 else ("flaml", "lepton")
                for tool in order:  # alternate who goes first, against drifting load
                    run = run_worker(tool, path, budget, seed)
                    run["score"] = score(task, run.pop("predictions"))
                    runs[tool].append(run)
                    print(f"{name:<14} {tool:<7} seed {seed}: {task['metric']} "
                          f"{run['score']:.4f}  call {run['seconds']:.1f}s (imports "
                          f"{run['import_seconds']:.1f}s, process {run['process_seconds']:.1f}s)"
                          f"  best {run['best']}, {run['trials']} trials", flush=True)  # fmt: skip
            rows.append(summarize(name, task, runs, budget))
    print_table(rows, budget, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def summarize(name: str, task: dict[str, Any], runs: dict[str, list[dict[str, Any]]],
              budget: float) -> dict[str, Any]:  # fmt: skip
    def med(tool: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[tool])

    return {
        "task": name,
        "rows": f"{len(task['y_train'])}/{len(task['y_test'])}",
        "features": task["x_train"].shape[1],
        "metric": task["metric"],
        "lepton": med("lepton", "score"),
        "flaml": med("flaml", "score"),
        "lepton_s": med("lepton", "seconds"),
        "flaml_s": med("flaml", "seconds"),
        "lepton_best": runs["lepton"][0]["best"],
        "flaml_best": runs["flaml"][0]["best"],
        "budget": budget,
    }


def print_table(rows: list[dict[str, Any]], budget: float, repeats: int) -> None:
    print(f"\nbudget {budget:g}s per tool and task, {repeats} seed(s), medians; held-out test")
    header = (
        "| task | train/test rows | features | metric | lp.automl | FLAML | diff | "
        "lp.automl s (/budget) | FLAML s (/budget) | lp.automl winner | FLAML winner |"
    )
    print(header)
    print("|" + "---|" * 11)
    for r in rows:
        print(f"| {r['task']} | {r['rows']} | {r['features']} | {r['metric']} | "
              f"{r['lepton']:.4f} | {r['flaml']:.4f} | {r['lepton'] - r['flaml']:+.4f} | "
              f"{r['lepton_s']:.1f} ({r['lepton_s'] / budget:.2f}) | "
              f"{r['flaml_s']:.1f} ({r['flaml_s'] / budget:.2f}) | {r['lepton_best']} | "
              f"{r['flaml_best']} |")  # fmt: skip
    wins = sum(r["lepton"] >= r["flaml"] for r in rows)
    kept = sum(r["lepton_s"] <= 1.1 * budget for r in rows)
    print(f"\nlp.automl >= FLAML on {wins}/{len(rows)} tasks; lp.automl within 110% of the "
          f"budget on {kept}/{len(rows)}")  # fmt: skip


if __name__ == "__main__":
    main()
