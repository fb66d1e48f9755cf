"""Vision benchmarks: digit-scene detection (COCO mAP) and image classification with
augmentation (Fashion-MNIST, MNIST), each beside its reference measured in the same run.

detect: ``lp.vision.Detector`` (CenterNet-style) trained with ``lp.fit`` on
``digit_scenes("train", n=--train-scenes, seed=0)`` and scored on 1,000 held-out scenes of
TEST-split digits (``digit_scenes("test", n=1000, seed=1)``): mAP@0.5 (target >= 0.90) and
mAP@[.5:.95], inference ms/image. Beside it, the same evaluator on the training targets
themselves, decoded (the encoding's ceiling: 1.0 when boxes survive the grid exactly).

classify: the seed ConvNet ([32, 64, 128], dropout 0.5) trained without augmentation,
then a ResNet (``lp.models.ResNet``, widths --widths, --blocks per stage) trained with
``lp.vision.Augment`` (random crop, padding 2; horizontal flips for clothes only; random
erasing), label smoothing 0.1, optional mixup/cutmix (``--mix``), evaluated plainly and
with test-time augmentation. Targets: Fashion-MNIST >= 94%, MNIST >= 99.5%. With
``--checkpoint DIR`` each fit writes a checkpoint after every epoch and the same command
continues an interrupted run exactly where it stopped (fit time is summed over the epochs).

    python benchmarks/vision.py detect [--train-scenes 3000] [--epochs 6] [--width 32]
    python benchmarks/vision.py classify --dataset fashion-mnist [--epochs 2] [--limit 0]
        [--reference-epochs N] [--checkpoint DIR]
    python benchmarks/vision.py --threads 1 layout      # ResNet steps: channels-last vs NCHW
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

import lepton as lp
from lepton import vision


def detect(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    train = vision.digit_scenes("train", n=args.train_scenes, seed=0, size=args.size)
    test = vision.digit_scenes("test", n=args.test_scenes, seed=1, size=args.size)
    made = time.perf_counter() - started
    det = vision.Detector(classes=train.classes, width=args.width, blocks=args.blocks)
    det.fit(train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            quiet=False)  # fmt: skip
    assert det.result is not None
    ours = det.evaluate(test)
    ceiling_ds = vision.detection_dataset(test, len(test.classes))
    assert ceiling_ds.targets is not None
    maps = ceiling_ds.targets.clone()
    c = len(test.classes)
    maps[:, :c] = torch.logit(maps[:, :c].clamp(1e-4, 1 - 1e-4))
    ceiling = vision.mean_average_precision(
        vision.decode(maps, score_threshold=0.01), test.boxes, test.labels
    )
    wall = time.perf_counter() - started
    print()
    n_train, n_test = sum(len(b) for b in train.boxes), sum(len(b) for b in test.boxes)
    print(
        f"Digit scenes {args.size}x{args.size}: {len(train)} train scenes ({n_train} digits), "
        f"{len(test)} held-out scenes ({n_test} test-split digits); made in {made:.0f} s"
    )
    print(f"  lepton Detector(width={args.width}, blocks={args.blocks}), {args.epochs} epochs, "
          f"{det.result.seconds:.0f} s in fit ({det.result.samples_per_second:.1f} scenes/s), "
          f"{args.threads} threads")  # fmt: skip
    print(f"    mAP@0.5 {ours['map_50']:.3f} (target >= 0.90)  mAP@[.5:.95] {ours['map']:.3f}  "
          f"mAP@0.75 {ours['map_75']:.3f}  AR@100 {ours['mar_100']:.3f}  "
          f"{ours['ms_per_image']:.1f} ms/image")  # fmt: skip
    print(f"  ceiling (the training maps decoded): mAP@0.5 {ceiling['map_50']:.3f}  "
          f"mAP@[.5:.95] {ceiling['map']:.3f}")  # fmt: skip
    print(f"  wall {wall:.0f} s")


def classify(args: argparse.Namespace) -> None:
    name = args.dataset
    full = lp.data.load(name, split="train")
    if args.limit:
        full = full.subset(range(args.limit))
    test = lp.data.load(name, split="test")
    clothes = name == "fashion-mnist"
    rows = []
    ref_epochs = args.reference_epochs or args.epochs

    def saved(part: str) -> dict[str, Any]:
        if args.checkpoint is None:
            return {}
        return {"checkpoint_dir": Path(args.checkpoint) / f"{name}-{part}", "resume": True}

    started = time.perf_counter()
    seed_net = lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3,
                                 dropout=0.5)  # fmt: skip
    result = lp.fit(seed_net, full, epochs=ref_epochs, batch_size=args.batch_size, lr=2e-3,
                    schedule="onecycle", seed=args.seed,
                    **saved(f"convnet-{ref_epochs}ep"))  # fmt: skip
    acc = lp.evaluate(seed_net, test)["accuracy"]
    rows.append((f"seed ConvNet, no augmentation, {ref_epochs} epochs", acc, None,
                 time.perf_counter() - started, fit_seconds(result)))  # fmt: skip

    started = time.perf_counter()
    net = lp.models.ResNet(num_classes=10, widths=args.widths, blocks_per_stage=args.blocks)
    augmented = full.with_transform(vision.Augment(padding=2, hflip=clothes, erasing=args.erasing))
    mix = vision.RandomMix(10, p=0.5) if args.mix else None
    # one checkpoint folder per architecture and recipe, so another run never resumes it
    widths = "-".join(str(w) for w in args.widths)
    resnet_part = f"resnet-{widths}x{args.blocks}-{args.epochs}ep{'-mix' if args.mix else ''}"
    result = lp.fit(net, augmented, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                    loss=vision.label_smoothing(0.1), batch_transform=mix, seed=args.seed,
                    **saved(resnet_part))  # fmt: skip
    acc = lp.evaluate(net, test)["accuracy"]
    tta = vision.tta_accuracy(net, test, shift=1, hflip=clothes)
    label = (f"ResNet{list(args.widths)}x{args.blocks} + crop/{'flip/' if clothes else ''}"
             f"erasing{'/mix' if args.mix else ''} + smoothing, {args.epochs} epochs")  # fmt: skip
    rows.append((label, acc, tta, time.perf_counter() - started, fit_seconds(result)))

    target = 0.94 if clothes else 0.995
    print()
    print(f"{name}: {len(full)} training images, {len(test)} test images, batch "
          f"{args.batch_size}, {args.threads} threads")  # fmt: skip
    for label, acc, tta, wall, fit_s in rows:
        extra = f", with TTA {100 * tta:.2f}%" if tta is not None else ""
        print(f"  {label}: {100 * acc:.2f}%{extra}  ({wall:.0f} s wall, {fit_s:.0f} s in fit)")
    print(f"  target >= {100 * target:.1f}%")


def layout(args: argparse.Namespace) -> None:
    """Training steps of the same ResNet with channels-last activations and without,
    alternated in one process (median of --reps rounds of --steps steps each)."""
    import statistics

    torch.manual_seed(args.seed)
    x = torch.rand(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    nets = {}
    for last in (False, True):
        torch.manual_seed(args.seed)
        net = lp.models.ResNet(num_classes=10, widths=args.widths, blocks_per_stage=args.blocks,
                               channels_last=last)  # fmt: skip
        nets[last] = (net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9))
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.reps + 1):  # the first round warms up and is dropped
        for last, (net, opt) in nets.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times[last].append((time.perf_counter() - started) * 1000 / args.steps)
    plain, last = (statistics.median(times[k][1:]) for k in (False, True))
    print(f"ResNet{list(args.widths)}x{args.blocks}, batch {args.batch_size} of 28x28, "
          f"{args.threads} threads, median of {args.reps} rounds of {args.steps} "
          f"steps:")  # fmt: skip
    print(f"  NCHW activations          {plain:8.1f} ms/step")
    print(f"  channels-last (default)   {last:8.1f} ms/step   {plain / last:.2f}x")


def fit_seconds(result: lp.FitResult) -> float:
    """Training time over every epoch, including those of an earlier, resumed process."""
    return sum(record.seconds for record in result.history)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    sub = parser.add_subparsers(dest="task", required=True)
    d = sub.add_parser("detect")
    d.add_argument("--train-scenes", type=int, default=3000)
    d.add_argument("--test-scenes", type=int, default=1000)
    d.add_argument("--size", type=int, default=64)
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--lr", type=float, default=2e-3)
    d.add_argument("--width", type=int, default=32)
    d.add_argument("--blocks", type=int, default=3)
    c = sub.add_parser("classify")
    c.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist")
    c.add_argument("--epochs", type=int, default=2)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--lr", type=float, default=0.1)
    c.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    c.add_argument("--blocks", type=int, default=2)
    c.add_argument("--erasing", type=float, default=0.25)
    c.add_argument("--mix", action="store_true", help="mixup/cutmix on half the batches")
    c.add_argument("--limit", type=int, default=0, help="train on the first N images only")
    c.add_argument("--reference-epochs", type=int, default=0,
                   help="epochs of the seed ConvNet (default: --epochs)")  # fmt: skip
    c.add_argument("--checkpoint", default=None,
                   help="per-epoch checkpoints here, a folder per model, epochs and --mix; "
                   "rerunning the same command continues them (other --lr, --erasing, "
                   "--limit or --batch-size: use another folder)")  # fmt: skip
    lay = sub.add_parser("layout", help="channels-last activations against NCHW")
    lay.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    lay.add_argument("--blocks", type=int, default=2)
    lay.add_argument("--batch-size", type=int, default=128)
    lay.add_argument("--steps", type=int, default=3)
    lay.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"detect": detect, "classify": classify, "layout": layout}[args.task](args)


if __name__ == "__main__":
    main()
