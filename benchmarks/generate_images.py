"""Image generation on MNIST / Fashion-MNIST: how recognisable and how close to the real
test images the samples of ``lp.vision.Generator`` are, beside the floor (real held-out
images) and trivial baselines, all measured in the same run with the same classifier.

Measures (``lp.vision.frechet_distance`` / ``label_accuracy``):

* FD: the Frechet distance between 1,000-ish images and real test images in the
  penultimate features of a ConvNet Lepton trains here. **Not the Inception FID**: the
  figures compare only with each other.
* label accuracy: how often that ConvNet predicts the class the images were made for.

Rows: ``real (other test half)`` is the floor (two halves of the real test set);
``class means`` (each class's mean training image) and ``noise`` (uniform pixels) are
trivial baselines; ``generator`` is the trained model's samples, with sampling ms/image.

    .venv/bin/python benchmarks/generate_images.py --quick            # minutes
    .venv/bin/python benchmarks/generate_images.py --kind vae          # the full run
    .venv/bin/python benchmarks/generate_images.py --kind ddpm         # GPU: hours on a CPU

Trained models are cached (safetensors) under ``benchmarks/.cache/generate/``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import lepton as lp

CACHE = Path(__file__).parent / ".cache" / "generate"


def _cached(model: Callable[[], torch.nn.Module], key: str, train: Any) -> float:
    """Load the weights of ``model()`` from the cache, or train them with ``train()`` and
    cache those of ``model()`` afterwards (``Generator.fit`` builds a new module, so the
    module is asked for again once trained); returns the training seconds (0 when cached)."""
    path = CACHE / f"{key}.safetensors"
    if path.exists():
        model().load_state_dict(load_file(str(path)))
        return 0.0
    started = time.perf_counter()
    train()
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model().state_dict().items()}, str(path))
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--kind", default="vae", choices=["vae", "ddpm"])
    ap.add_argument("--epochs", type=int, default=None, help="generator epochs")
    ap.add_argument("--rows", type=int, default=60_000, help="training images")
    ap.add_argument("--samples", type=int, default=1000, help="generated (and real) images")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps (ddpm)")
    ap.add_argument("--guidance", type=float, default=2.0, help="guidance scale (ddpm)")
    ap.add_argument("--latent", type=int, default=2, help="code size (vae)")
    ap.add_argument("--temperature", type=float, default=0.8, help="code spread (vae)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="20k rows, a smaller VAE, 500 samples")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.rows, args.samples = min(args.rows, 20_000), min(args.samples, 500)
    epochs = args.epochs or (10 if args.quick else 20 if args.kind == "vae" else 30)
    train = lp.data.load(args.dataset, split="train")
    test = lp.data.load(args.dataset, split="test")
    assert train.targets is not None
    assert test.targets is not None
    rows = train.subset(slice(0, args.rows))
    tag = f"{args.dataset}-{args.rows}"

    # the judge: a ConvNet trained on the training split (its test accuracy is the floor)
    filters, clf_rows = ([16, 32], rows) if args.quick else ([32, 64], train)
    classifier = lp.models.build("convnet", num_classes=10, num_filters=filters, dropout=0.25)
    clf_seconds = _cached(
        lambda: classifier,
        f"convnet-{args.dataset}-{len(clf_rows)}",
        lambda: lp.fit(classifier, clf_rows, epochs=2 if args.quick else 3, batch_size=128,
                       lr=2e-3, schedule="onecycle", quiet=True),
    )  # fmt: skip
    classifier.eval()
    n = args.samples
    real_a = (test.features[:n] * 255).round().to(torch.uint8)  # what the samples face

    options: dict[str, Any] = {}
    if args.kind == "vae":
        options = {"latent": args.latent} | ({"hidden": [256, 128]} if args.quick else {})
    gen = lp.vision.Generator(train.classes or 10, kind=args.kind, **options)
    key = f"{args.kind}-{tag}-e{epochs}" + (f"-z{args.latent}" if args.kind == "vae" else "")
    key += "-quick" if args.quick else ""
    gen_seconds = _cached(
        lambda: gen.model,
        key,
        lambda: gen.fit(rows, epochs=epochs, batch_size=128, lr=2e-3, quiet=False),
    )
    gen = lp.vision.Generator.from_model(gen.model)
    asked = torch.arange(n) % 10  # every class equally
    draw = {"steps": args.steps, "guidance": args.guidance, "temperature": args.temperature}
    # the generator's samples and the floor (two real test halves), as `generate` jobs judge
    quality = lp.vision.sample_quality(gen, test, classifier, n=n, seed=0, **draw)
    ms = quality["ms_per_image"]
    means = torch.stack([train.features[train.targets == c].mean(0) for c in range(10)])
    class_means = (means[asked] * 255).round().to(torch.uint8)
    noise = torch.randint(
        0, 256, real_a.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )

    fd, acc = lp.vision.frechet_distance, lp.vision.label_accuracy
    table = {
        "real (other test half)": (quality["frechet_floor"], quality["real_label_accuracy"]),
        "class means": (fd(class_means, real_a, classifier), acc(class_means, asked, classifier)),
        "noise": (fd(noise, real_a, classifier), acc(noise, asked, classifier)),
        f"generator ({args.kind})": (quality["frechet_distance"], quality["label_accuracy"]),
    }
    if args.kind == "vae" and args.temperature != 1.0:  # the same model, codes from N(0, I)
        plain = gen.sample(n, label=asked.tolist(), seed=0)
        table["generator (vae, T=1.0)"] = (
            fd(plain, real_a, classifier),
            acc(plain, asked, classifier),
        )
    print(
        f"\n{args.dataset}: {n} images per set, FD in the ConvNet's penultimate features "
        f"(NOT the Inception FID); classifier trained in {clf_seconds:.0f} s (0: cached)"
    )
    print(
        f"generator: {args.kind}, {sum(p.numel() for p in gen.model.parameters()):,} parameters, "
        f"{epochs} epochs on {args.rows:,} images in {gen_seconds:.0f} s (0: cached); "
        f"sampling {ms:.2f} ms/image; {draw}"
    )
    print(f"{'images':<26}{'FD (lower is better)':>22}{'label accuracy':>16}")
    for name, (d, a) in table.items():
        print(f"{name:<26}{d:>22.2f}{a:>16.1%}")
    CACHE.mkdir(parents=True, exist_ok=True)
    grid = CACHE / f"{key}.png"
    shown = gen.sample(50, label=(torch.arange(50) // 5).tolist(), seed=1, **draw)
    grid.write_bytes(gen.to_png(shown, columns=10))
    print(f"samples: {grid}")
    if args.json:
        record = {"dataset": args.dataset, "kind": args.kind, "epochs": epochs, "rows": args.rows,
                  "samples": n, "train_seconds": gen_seconds, "ms_per_image": ms,
                  "table": {k: {"fd": d, "label_accuracy": a}
                            for k, (d, a) in table.items()}}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
