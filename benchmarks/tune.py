"""Tuning efficiency: TPE + pruning vs random search without pruning, in ``lp.tune``.

Both arms search the SAME ConvNet/MLP space (model, width, dropout, learning rate,
optimizer, batch size) on a fixed Fashion-MNIST subset, with the same trial budget, the
same epochs per trial and the same torch thread count, for the same sampler seeds. Each
(arm, seed) is its own study in its own temporary ``LEPTON_HOME`` (SQLite database and
artifact store), so nothing is shared between runs.

The figure is the compute a search spends before it first holds a model at a fixed
validation accuracy: epochs trained, summed over trials in trial order, up to the epoch
at which some trial first reports ``val_accuracy >= target``. A search that never
reaches the target is counted at the whole budget (``trials * epochs``, which is also
what an unpruned search spends in full). The target is fixed before any TPE trial runs:
all random-search studies run first, and the target is the best validation accuracy
random search reached over its whole budget, median over seeds (the "speed-up to reach
random search's final performance" of the Hyperband and BOHB papers); with
``--target-quantile Q`` it is instead the Q quantile of the best validation accuracy of
every random trial, pooled over seeds (0.8: what the top 20% of random configurations
reach). Every run also prints the ratios at the 0.8, 0.9 and 0.95 quantiles. Target:
median ratio TPE+pruning / random <= 0.5.

    python benchmarks/tune.py [--seeds 5] [--trials 20] [--epochs 4] [--pruner median]
    python benchmarks/tune.py --pruner median,hyperband   # both pruners, one random arm
    python benchmarks/tune.py --quick        # 2 seeds, fewer trials: a few minutes
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lepton.data import Dataset

HERE = Path(__file__).resolve().parent
QUANTILES = (0.8, 0.9, 0.95)


def search_space() -> dict[str, Any]:
    """The space both arms search: wide ranges, where many configurations are poor
    (SGD at a small learning rate barely moves in 4 epochs; no MLP gets near a good
    ConvNet), which is what a model-based search with pruning should spend less on."""
    from lepton.tune import Categorical, Float, Int

    return {
        "model": Categorical(
            ["mlp", "convnet"],
            when={
                "mlp": {"hidden": Int(32, 512, log=True)},
                # first-block widths 4..16 (ConvNet [4, 8, 16] .. [16, 32, 64]): wider is
                # too slow for a shared 2-core benchmark
                "convnet": {"num_filters": Int(4, 16, log=True)},
            },
        ),
        # shared by both models: a space may not repeat a name in two conditional branches
        "dropout": Float(0.0, 0.5),
        "lr": Float(1e-4, 3e-2, log=True),
        "optimizer": Categorical(["adamw", "sgd"]),
        "batch_size": Categorical([32, 64, 128]),
    }


@dataclass
class Job:
    """One study: an arm (sampler + pruner) and a seed, with the shared settings."""

    arm: str
    sampler: str
    pruner: str
    seed: int
    trials: int
    epochs: int
    n_train: int
    n_val: int
    threads: int


@dataclass
class Trial:
    number: int
    state: str
    params: dict[str, Any]
    epochs: int  # epochs trained (a diverged trial: those reported + the one it broke in)
    curve: list[float]  # val_accuracy after each epoch it trained
    seconds: float | None


@dataclass
class Study:
    arm: str
    seed: int
    wall_s: float
    best_value: float | None
    epochs_trained: int
    trials: list[Trial] = field(default_factory=list)


_DATA: dict[tuple[int, int], tuple[Dataset, Dataset]] = {}


def subsets(n_train: int, n_val: int) -> tuple[Dataset, Dataset]:
    """A fixed-seed draw of ``n_train`` images of Fashion-MNIST's training split and
    ``n_val`` of its test split (the same images in every study)."""
    import lepton as lp

    key = (n_train, n_val)
    if key not in _DATA:
        train = lp.data.load("fashion-mnist", split="train")
        test = lp.data.load("fashion-mnist", split="test")
        gen = torch.Generator().manual_seed(0)
        train_idx = torch.randperm(len(train), generator=gen)[:n_train]
        val_idx = torch.randperm(len(test), generator=gen)[:n_val]
        _DATA[key] = (train.subset(train_idx), test.subset(val_idx))
    return _DATA[key]


def run_study(job: Job) -> Study:
    """Run one study in a fresh LEPTON_HOME and read every trial's per-epoch curve back
    from the Optuna study."""
    import optuna

    from lepton.storage import open_database
    from lepton.tune import tune
    from lepton.tune._optuna import storage_for

    torch.set_num_threads(job.threads)
    train, val = subsets(job.n_train, job.n_val)
    home = Path(tempfile.mkdtemp(prefix=f"lepton-tune-bench-{job.arm}-{job.seed}-"))
    previous = os.environ.get("LEPTON_HOME")
    os.environ["LEPTON_HOME"] = str(home)  # the artifact store of this study's trial runs
    try:
        db = open_database(f"sqlite:///{home / 'lepton.db'}")
        name = f"bench-{job.arm}-seed{job.seed}"
        started = time.perf_counter()
        result = tune(
            search_space(),
            train,
            val,
            metric="val_accuracy",
            epochs=job.epochs,
            n_trials=job.trials,
            sampler=job.sampler,
            pruner=job.pruner,
            seed=job.seed,
            study=name,
            database=db,
            fit_options={"num_threads": job.threads, "device": "cpu"},
        )
        wall = time.perf_counter() - started
        handle = optuna.load_study(study_name=name, storage=storage_for(db))
        frozen = {t.number: t for t in handle.get_trials(deepcopy=False)}
        trials = []
        for record in sorted(result.trials, key=lambda r: r.number):
            steps = frozen[record.number].intermediate_values
            curve = [float(steps[k]) for k in sorted(steps)]
            epochs = record.epochs
            if epochs is None:  # failed (diverged) mid-epoch: count that epoch too
                epochs = min(len(curve) + 1, job.epochs)
            trials.append(
                Trial(
                    record.number, record.state, dict(record.params), epochs, curve, record.seconds
                )
            )
        return Study(
            arm=job.arm,
            seed=job.seed,
            wall_s=wall,
            best_value=result.best_value,
            epochs_trained=sum(t.epochs for t in trials),
            trials=trials,
        )
    finally:
        if previous is None:
            os.environ.pop("LEPTON_HOME", None)
        else:
            os.environ["LEPTON_HOME"] = previous
        shutil.rmtree(home, ignore_errors=True)


def warm_up(threads: int) -> None:
    """Imports and torch's first-call costs (seconds), paid before any study is timed so
    that the first study of a process is not charged for them."""
    import lepton as lp
    import lepton.tune
    from lepton.train.recipe import build_model

    torch.set_num_threads(threads)
    data = lp.data.load("fashion-mnist", split="test").subset(slice(0, 256))
    for name in ("mlp", "convnet"):
        for batch_size in (32, 64, 128):
            lp.fit(build_model(name, data, {}), data, data, epochs=1, batch_size=batch_size,
                   quiet=True, device="cpu", num_threads=threads)  # fmt: skip


def run_all(jobs: Sequence[Job], pool: concurrent.futures.Executor | None) -> list[Study]:
    """Run ``jobs`` in ``pool``'s processes (None: in this process), printing each as it
    ends; results come back in the order of ``jobs``."""
    done: list[Study | None] = [None] * len(jobs)

    def show(study: Study) -> None:
        pruned = sum(t.state == "pruned" for t in study.trials)
        failed = sum(t.state == "fail" for t in study.trials)
        print(
            f"  {study.arm:<10} seed {study.seed}: {len(study.trials)} trials "
            f"({pruned} pruned, {failed} failed), {study.epochs_trained} epochs, "
            f"best {study.best_value or 0:.4f}, {study.wall_s:.0f} s",
            flush=True,
        )

    if pool is None:
        for i, job in enumerate(jobs):
            done[i] = study = run_study(job)
            show(study)
    else:
        futures = {pool.submit(run_study, job): i for i, job in enumerate(jobs)}
        for future in concurrent.futures.as_completed(futures):
            study = future.result()
            done[futures[future]] = study
            show(study)
    return [s for s in done if s is not None]


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (NumPy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def trial_bests(studies: Sequence[Study]) -> list[float]:
    """Each trial's best validation accuracy (at any epoch; 0 for one that reported
    none), over all ``studies``."""
    return [max(t.curve, default=0.0) for s in studies for t in s.trials]


def study_best(study: Study) -> float:
    """The best validation accuracy any trial of ``study`` reported, at any epoch."""
    return max((max(t.curve) for t in study.trials if t.curve), default=0.0)


def candidate_targets(random: Sequence[Study]) -> dict[str, float]:
    """Every target rule, from the random-search studies only."""
    targets = {"random-best": statistics.median(study_best(s) for s in random)}
    for q in QUANTILES:
        targets[f"q{q:g}"] = quantile(trial_bests(random), q)
    return targets


def describe(name: str, random: Sequence[Study]) -> str:
    """How the target called ``name`` was chosen."""
    if name == "random-best":
        return (
            f"the best val_accuracy random search reached over its whole budget, median "
            f"over its {len(random)} seeds"
        )
    q = float(name[1:])
    return (
        f"the {q:g} quantile of the best val_accuracy of all {len(trial_bests(random))} "
        f"random trials: ~{100 * (1 - q):.0f}% of random configurations reach it"
    )


def epochs_to_target(study: Study, target: float, budget: int) -> tuple[int, bool]:
    """Epochs summed over trials in trial order until some trial first reports
    ``val_accuracy >= target``; ``(budget, False)`` when none does."""
    spent = 0
    for trial in study.trials:
        for epoch, accuracy in enumerate(trial.curve, start=1):
            if accuracy >= target:
                return spent + epoch, True
        spent += trial.epochs
    return budget, False


def compare(
    random: Sequence[Study], tpe: Sequence[Study], target: float, budget: int
) -> dict[str, Any]:
    """Per seed: each arm's compute to the target, and the ratio; with the medians."""
    rows = []
    for r, t in zip(random, tpe, strict=True):
        r_epochs, r_hit = epochs_to_target(r, target, budget)
        t_epochs, t_hit = epochs_to_target(t, target, budget)
        rows.append({
            "seed": r.seed, "random_epochs": r_epochs, "random_reached": r_hit,
            "tpe_epochs": t_epochs, "tpe_reached": t_hit, "ratio": t_epochs / r_epochs,
        })  # fmt: skip
    med_r = statistics.median(row["random_epochs"] for row in rows)
    med_t = statistics.median(row["tpe_epochs"] for row in rows)
    return {
        "target": target,
        "seeds": rows,
        "median_ratio": statistics.median(row["ratio"] for row in rows),
        "ratio_of_medians": med_t / med_r,
        "random_median_epochs": med_r,
        "tpe_median_epochs": med_t,
    }


def print_table(
    random: Sequence[Study], tpe: Sequence[Study], result: dict[str, Any], tpe_arm: str
) -> None:
    head = (
        f"{'seed':>4} | {'random: epochs':>14} {'total':>5} {'best':>6} {'wall s':>6} | "
        f"{tpe_arm + ': epochs':>16} {'total':>5} {'best':>6} {'wall s':>6} | {'ratio':>5}"
    )
    print(head)
    print("-" * len(head))

    def cell(epochs: float, hit: bool) -> str:
        return f"{epochs:g}" + ("" if hit else " (never)")

    for r, t, row in zip(random, tpe, result["seeds"], strict=True):
        print(
            f"{r.seed:>4} | {cell(row['random_epochs'], row['random_reached']):>14} "
            f"{r.epochs_trained:>5} {r.best_value or 0:>6.4f} {r.wall_s:>6.0f} | "
            f"{cell(row['tpe_epochs'], row['tpe_reached']):>16} {t.epochs_trained:>5} "
            f"{t.best_value or 0:>6.4f} {t.wall_s:>6.0f} | {row['ratio']:>5.2f}"
        )
    print("-" * len(head))

    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    print(
        f"{'med':>4} | {result['random_median_epochs']:>14g} "
        f"{med([s.epochs_trained for s in random]):>5g} "
        f"{med([s.best_value or 0 for s in random]):>6.4f} "
        f"{med([s.wall_s for s in random]):>6.0f} | {result['tpe_median_epochs']:>16g} "
        f"{med([s.epochs_trained for s in tpe]):>5g} {med([s.best_value or 0 for s in tpe]):>6.4f} "
        f"{med([s.wall_s for s in tpe]):>6.0f} | {result['median_ratio']:>5.2f}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds, 10 trials, 3 epochs")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 5)")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (default 20)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 4)")
    parser.add_argument("--train", type=int, default=None, help="training images (default 2000)")
    parser.add_argument("--val", type=int, default=None, help="validation images (default 2000)")
    parser.add_argument(
        "--pruner", default="median",
        help="TPE arm(s): median, hyperband, or both comma-separated (the first is the "
        "headline; each is compared with the same random arm)",
    )  # fmt: skip
    parser.add_argument(
        "--target-quantile", type=float, default=None,
        help="target: this quantile of the random trials' best val_accuracy (default: "
        "random search's best over its budget, median over seeds)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads per study")
    parser.add_argument("--workers", type=int, default=2, help="studies run at once")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    pruners = [p.strip() for p in args.pruner.split(",") if p.strip()]
    if not pruners or any(p not in ("median", "hyperband") for p in pruners):
        parser.error("--pruner takes median, hyperband, or median,hyperband")
    if args.target_quantile is not None and not 0 < args.target_quantile < 1:
        parser.error("--target-quantile must be in (0, 1)")
    seeds = args.seeds or (2 if args.quick else 5)
    trials = args.trials or (10 if args.quick else 20)
    epochs = args.epochs or (3 if args.quick else 4)
    n_train = args.train or (1000 if args.quick else 2000)
    n_val = args.val or (1000 if args.quick else 2000)
    out = args.out or HERE / "results" / ("tune-quick.json" if args.quick else "tune.json")
    budget = trials * epochs

    def jobs(arm: str, sampler: str, pruner: str) -> list[Job]:
        return [
            Job(arm, sampler, pruner, seed, trials, epochs, n_train, n_val, args.threads)
            for seed in range(seeds)
        ]

    from lepton.tune import space_to_json

    print(
        f"Fashion-MNIST: {n_train} training / {n_val} validation images (seed 0); "
        f"{seeds} seeds x {trials} trials x <= {epochs} epochs; {args.threads} torch "
        f"thread(s) per study, {args.workers} studies at once"
    )
    print("space:", json.dumps(space_to_json(search_space())))
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        pool: concurrent.futures.Executor | None = None
        if args.workers > 1:
            pool = stack.enter_context(
                concurrent.futures.ProcessPoolExecutor(
                    args.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=warm_up,
                    initargs=(args.threads,),
                )
            )
        else:
            warm_up(args.threads)
        print("random search, no pruning (all seeds first: they fix the target)")
        random = run_all(jobs("random", "random", "none"), pool)
        targets = candidate_targets(random)
        name = "random-best" if args.target_quantile is None else f"q{args.target_quantile:g}"
        if args.target_quantile is not None:
            targets[name] = quantile(trial_bests(random), args.target_quantile)
        target = targets[name]
        print(
            f"target: val_accuracy >= {target:.4f}, {describe(name, random)}; fixed before "
            f"any TPE trial ran"
        )
        arms: dict[str, list[Study]] = {}
        for pruner in pruners:
            print(f"TPE + {pruner} pruning")
            arms[f"tpe+{pruner}"] = run_all(jobs(f"tpe+{pruner}", "tpe", pruner), pool)

    results: dict[str, Any] = {}
    for arm, tpe in arms.items():
        result = compare(random, tpe, target, budget)
        result["target_rule"] = describe(name, random)
        result["other_targets"] = {
            key: compare(random, tpe, value, budget) for key, value in targets.items()
        }
        results[arm] = result
        print()
        print(
            f"epochs trained until some trial first reports val_accuracy >= {target:.4f} "
            f"(summed over trials in trial order; '(never)': not reached, counted as the "
            f"whole budget of {budget} epochs); total: epochs of the whole study; best: "
            f"the best completed trial's val_accuracy; wall: the study's wall time"
        )
        print_table(random, tpe, result, arm)
        verdict = "PASS" if result["median_ratio"] <= 0.5 else "FAIL"
        print(
            f"median ratio {arm} / random = {result['median_ratio']:.2f} (ratio of the "
            f"medians {result['ratio_of_medians']:.2f}); target <= 0.5 -> {verdict}"
        )
        print("  every target rule (target accuracy: median ratio, ratio of the medians):")
        for key, other in result["other_targets"].items():
            print(
                f"    {key:<12} {other['target']:.4f}: {other['median_ratio']:.2f}, "
                f"{other['ratio_of_medians']:.2f}   ({describe(key, random)})"
            )
    total = time.perf_counter() - started
    print(f"whole run: {total:.0f} s")

    command = sys.argv[1:] if argv is None else list(argv)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python benchmarks/tune.py", *command]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "settings": {
            "seeds": seeds,
            "trials": trials,
            "epochs": epochs,
            "train": n_train,
            "val": n_val,
            "pruners": pruners,
            "threads": args.threads,
            "workers": args.workers,
            "target": name,
            "budget_epochs": budget,
        },
        "space": space_to_json(search_space()),
        "target": target,
        "results": results,
        "wall_s": total,
        "studies": [asdict(s) for s in [*random, *(s for arm in arms.values() for s in arm)]],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
