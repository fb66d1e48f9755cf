"""Explanations: time per explanation for each method, and faithfulness by deletion curves.

The seed ConvNet (``num_filters=[32, 64, 128]``, dropout 0.5) is trained briefly on real
MNIST (one epoch over the first ``--train`` images), then:

1. **Time.** For each method, batch 1 and 32: ``lepton.explain.explain`` beside the same
   Captum call written by hand with the same settings (the reference: what our wrapper
   costs on top of Captum). Each call includes finding the predicted class. The two are
   interleaved, in an order rotated every repeat; medians and the ratio are reported.
2. **Faithfulness** (deletion curve, Petsiuk et al., 2018): for ``--images`` test images,
   the pixels are removed (set to the baseline, 0) in order of decreasing attribution, 5%
   to 50% of them, and the accuracy on the true labels is measured at each step; the
   reference is a random order (mean of 3 orders). Ties are broken at random. A faithful
   method makes the accuracy fall faster: its area under the curve (mean accuracy over
   0..50%) is below the random order's.

    python benchmarks/explain.py [--quick] [--repeats 3] [--train 6000] [--images 300]
                                 [--methods saliency,gradcam] [--no-curves]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from captum import attr
from torch import nn

import lepton as lp
from lepton.explain import METHODS, explain

FRACTIONS = [i / 20 for i in range(11)]  # 0%, 5%, ..., 50% of the pixels
N_STEPS, WINDOW, STRIDE, PATCH = 50, 4, 2, 4  # the defaults of lepton.explain
Call = Callable[[torch.Tensor], torch.Tensor]


def train_model(samples: int) -> tuple[nn.Module, float]:
    torch.manual_seed(0)
    train = lp.data.load("mnist", split="train").subset(slice(0, samples))
    model = lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.5)
    lp.fit(model, train, epochs=1, batch_size=64, lr=2e-3, quiet=True, seed=0)
    test = lp.data.load("mnist", split="test")
    return model.eval(), float(lp.evaluate(model, test)["accuracy"])


def patch_mask() -> torch.Tensor:
    ids = (torch.arange(28) // PATCH)[:, None] * (28 // PATCH) + (torch.arange(28) // PATCH)
    return ids.reshape(1, 1, 28, 28)


def by_hand(model: nn.Module, method: str, shap_samples: int) -> Call:
    """The Captum call a user would write for ``method``, with lepton's default settings."""

    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = model(x).argmax(dim=1)
        per_eval = 256
        if method == "integrated_gradients":
            ig = attr.IntegratedGradients(model)
            return ig.attribute(x, baselines=0.0, target=target, n_steps=N_STEPS)  # type: ignore[no-any-return]
        if method == "saliency":
            return attr.Saliency(model).attribute(x.requires_grad_(), target=target)  # type: ignore[no-any-return]
        if method == "occlusion":
            return attr.Occlusion(model).attribute(  # type: ignore[no-any-return]
                x, sliding_window_shapes=(1, WINDOW, WINDOW), strides=(1, STRIDE, STRIDE),
                baselines=0.0, target=target, perturbations_per_eval=per_eval,
            )  # fmt: skip
        if method == "gradcam":
            cam = attr.LayerGradCam(model, model.features[-1][0])  # type: ignore[index]
            maps = cam.attribute(x, target=target, relu_attributions=True)
            return attr.LayerAttribution.interpolate(maps, (28, 28), "bilinear")  # type: ignore[no-any-return]
        if method == "shap":
            return attr.KernelShap(model).attribute(  # type: ignore[no-any-return]
                x, baselines=0.0, target=target, feature_mask=patch_mask(),
                n_samples=shap_samples, perturbations_per_eval=per_eval,
            )  # fmt: skip
        return attr.FeaturePermutation(model).attribute(  # type: ignore[no-any-return]
            x, target=target, feature_mask=patch_mask(), perturbations_per_eval=per_eval
        )

    return call


def ours(model: nn.Module, method: str, shap_samples: int) -> Call:
    options = {"n_samples": shap_samples} if method == "shap" else {}
    return lambda x: explain(model, x, method=method, **options).attributions


def timing(
    model: nn.Module, x: torch.Tensor, repeats: int, shap_samples: int, methods: list[str]
) -> list[dict]:
    rows = []
    for method in methods:
        for batch in (1, 32):
            if method == "permutation" and batch == 1:
                continue  # it shuffles across the batch: needs two or more inputs
            xb = x[:batch]
            runs = {"lepton": ours(model, method, shap_samples),
                    "captum": by_hand(model, method, shap_samples)}  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in runs}
            names = list(runs)
            for name in names:  # warm-up
                runs[name](xb.clone())
            for r in range(repeats):
                for name in names[r % 2 :] + names[: r % 2]:
                    start = time.perf_counter()
                    runs[name](xb.clone())
                    times[name].append(time.perf_counter() - start)
            lep, cap = (statistics.median(times[n]) for n in ("lepton", "captum"))
            rows.append({"method": method, "batch": batch, "lepton": lep, "captum": cap})
            print(f"  {method:22s} batch {batch:2d}: lepton {lep * 1e3:9.1f} ms "
                  f"({lep / batch * 1e3:8.1f} ms/image), captum {cap * 1e3:9.1f} ms, "
                  f"ratio {lep / cap:5.2f}", flush=True)  # fmt: skip
    return rows


def deletion_curve(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, scores: np.ndarray, seed: int
) -> list[float]:
    """Accuracy after removing the top-scored pixels, at each of FRACTIONS."""
    n, pixels = x.shape[0], x[0].numel()
    tiebreak = np.random.default_rng(seed).random((n, pixels))
    order = torch.from_numpy(np.lexsort((tiebreak, -scores.reshape(n, pixels)), axis=1).copy())
    flat = x.reshape(n, pixels)
    accuracy = []
    with torch.no_grad():
        for fraction in FRACTIONS:
            masked = flat.clone()
            k = round(fraction * pixels)
            if k:
                masked.scatter_(1, order[:, :k], 0.0)
            hits = (model(masked.reshape_as(x)).argmax(dim=1) == y).float()
            accuracy.append(float(hits.mean()))
    return accuracy


def area(curve: list[float]) -> float:
    """Mean accuracy over 0..50% (trapezoid rule)."""
    return float(np.trapezoid(curve, FRACTIONS) / (FRACTIONS[-1] - FRACTIONS[0]))


def faithfulness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, shap_samples: int, methods: list[str]
) -> dict:
    curves: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        options = {"n_samples": shap_samples} if method == "shap" else {}
        start = time.perf_counter()
        parts = [explain(model, x[i : i + 64], method=method, **options).numpy()
                 for i in range(0, len(x), 64)]  # fmt: skip
        seconds[method] = time.perf_counter() - start
        curves[method] = deletion_curve(model, x, y, np.concatenate(parts), seed=0)
        print(f"  {method:22s} AUC {area(curves[method]):.3f}  ({seconds[method]:.1f} s)",
              flush=True)  # fmt: skip
    randoms = [deletion_curve(model, x, y, np.zeros((len(x), 784)), seed=s) for s in range(3)]
    curves["random"] = [float(np.mean(step)) for step in zip(*randoms, strict=True)]
    print(f"  {'random':22s} AUC {area(curves['random']):.3f}")
    return {"curves": curves, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run (about 5 minutes on 2 cores)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=6000, help="training images (1 epoch)")
    parser.add_argument("--images", type=int, default=300, help="test images in the curves")
    parser.add_argument("--shap-samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS), help="a comma-separated subset")
    parser.add_argument("--no-curves", action="store_true", help="time only; no deletion curves")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.train, args.images, args.shap_samples = 2, 2000, 64, 100
    methods = [m for m in args.methods.split(",") if m]
    if not set(methods) <= set(METHODS):
        parser.error(f"--methods takes names from {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*multiple inputs.*")  # Captum's KernelShap

    started = time.perf_counter()
    model, accuracy = train_model(args.train)
    test = lp.data.load("mnist", split="test")
    x, y = test.features[: args.images].clone(), test.targets[: args.images]
    assert y is not None
    print(f"seed ConvNet, 1 epoch on {args.train:,} MNIST images: test accuracy "
          f"{accuracy:.2%} ({time.perf_counter() - started:.0f} s); torch threads "
          f"{torch.get_num_threads()}, shap n_samples {args.shap_samples}")  # fmt: skip

    print(f"\ntime per explanation (median of {args.repeats}, interleaved)")
    rows = timing(model, x, args.repeats, args.shap_samples, methods)
    result = None
    if not args.no_curves:
        print(f"\ndeletion curves on {len(x)} test images (accuracy vs pixels removed)")
        result = faithfulness(model, x, y, args.shap_samples, methods)

    print("\n| method | batch 1 (ms) | captum by hand | ratio | batch 32 (ms/image) | "
          "captum by hand | ratio |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for method in methods:
        cells = []
        for batch in (1, 32):
            row = next((r for r in rows if r["method"] == method and r["batch"] == batch), None)
            if row is None:
                cells.append("n/a (needs a batch) | | ")
                continue
            cells.append(f"{row['lepton'] / batch * 1e3:.1f} | {row['captum'] / batch * 1e3:.1f} | "
                         f"{row['lepton'] / row['captum']:.2f}")  # fmt: skip
        print(f"| {method} | " + " | ".join(cells) + " |")
    if result is None:
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
        return
    curves = result["curves"]
    header = " | ".join(f"{f:.0%}" for f in FRACTIONS)
    print(f"\n| order | {header} | AUC | AUC / random |")
    print("|---" * (len(FRACTIONS) + 3) + "|")
    random_auc = area(curves["random"])
    for name, curve in curves.items():
        cells = " | ".join(f"{a:.3f}" for a in curve)
        auc = area(curve)
        print(f"| {name} | {cells} | {auc:.3f} | {auc / random_auc:.2f} |")
    faithful = [m for m in methods if area(curves[m]) < random_auc]
    print(f"\nfaster than random: {', '.join(faithful)} ({len(faithful)} of {len(methods)}); "
          f"total {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
