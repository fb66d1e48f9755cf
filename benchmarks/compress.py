"""Compression: size, CPU latency and accuracy of every int8 path, pruning and distillation.

The seed ConvNet (``ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3,
dropout=0.5)``) and an MLP 784-256-256-10, trained on 20,000 real MNIST images (cached
under ``benchmarks/.cache/compress/``, so reruns skip the training), then:

* fp32 PyTorch (eager) and fp32 ONNX (``lp.compress.export_onnx``, onnxruntime);
* ONNX Runtime dynamic int8 of every op it can (``ConvInteger`` too), and of MatMul/Gemm
  only (``lp.compress.quantize(method="dynamic")``);
* ONNX Runtime static int8, per-channel weights, MinMax calibration on 512 real images:
  QDQ and QOperator formats (the QOperator one is ``quantize``'s default), the QOperator
  one without Lepton's ``Relu``-before-``MaxPool`` rewrite, and (full run) the Entropy
  and Percentile calibrations;
* PyTorch 2 export quantization: torchao's ``X86InductorQuantizer`` + ``torch.compile``,
  next to ``torch.compile`` of the fp32 model (full run; in its own venv,
  ``benchmarks/compress_torchao.py``);
* 50% structured pruning + one epoch of fine-tuning (PyTorch, its ONNX, and its int8);
* a distilled student of the pruned model's shape (T=4, alpha=0.7, 2 epochs).

Latency: batch 1 and 64, torch and onnxruntime on the same number of intra-op threads,
every variant timed in turn (order rotated every repeat), medians. Accuracy: the 10,000
test images. Targets for the best int8 path: >= 3.5x smaller, >= 1.5x faster at batch 64,
<= 0.5 point of accuracy lost.

    .venv/bin/python benchmarks/compress.py            # full (~15 min on 2 shared cores)
    .venv/bin/python benchmarks/compress.py --quick    # smoke (~4 min)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from safetensors.torch import load_file, save_file
from torch import nn

import lepton as lp
import lepton.compress as compress
from lepton.compress._graph import pre_process, scratch
from lepton.compress._quantize import calibration_reader
from lepton.compress._report import stored_size

HERE = Path(__file__).parent
CACHE = HERE / ".cache" / "compress"
RUNS = HERE / ".runs"
SEED_CONV = {"num_classes": 10, "num_filters": [32, 64, 128], "kernel_size": 3, "dropout": 0.5}


@dataclass
class Variant:
    """One model to measure: how to run a batch, and what it weighs."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]  # (B, 1, 28, 28) float32 -> (B, 10) logits
    size: int
    int8: bool = False  # one of the int8 paths (pruning + int8 is not one: ``False``)
    times: dict[int, list[float]] = field(default_factory=lambda: {1: [], 64: []})
    accuracy: float = 0.0
    note: str = ""
    onnx: bytes | None = None


def ignored(folder: Path) -> Path:
    """Create ``folder`` with a ``.gitignore`` that keeps its contents out of git."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitignore").write_text("*\n")
    return folder


def cached(
    key: str, build: Callable[[], nn.Module], train: Callable[[nn.Module], None]
) -> nn.Module:
    """The model trained as ``train`` says, from the cache when it is there."""
    path = ignored(CACHE) / f"{key}.safetensors"
    model = build()
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        print(f"  {key}: cached ({path.relative_to(HERE.parent)})", flush=True)
    else:
        started = time.perf_counter()
        train(model)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        print(f"  {key}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    return model.eval()


def torch_variant(name: str, model: nn.Module, note: str = "") -> Variant:
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]

    return Variant(name, run, stored_size(model), note=note)


def onnx_variant(name: str, data: bytes, threads: int, int8: bool, note: str = "") -> Variant:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: x})[0]  # type: ignore[no-any-return]

    return Variant(name, run, len(data), int8=int8, note=note, onnx=data)


def raw_ort(fp32: bytes, calibration: torch.Tensor, how: str, move_relu: bool = True) -> bytes:
    """onnxruntime's quantizer called directly, for the paths ``lp.compress`` does not take."""
    import onnx

    with scratch() as tmp:
        prepared = pre_process(fp32, Path(tmp))
        if not move_relu:  # the graph as exported: Conv -> MaxPool -> Relu
            from onnxruntime.quantization.shape_inference import quant_pre_process

            (Path(tmp) / "raw.onnx").write_bytes(fp32)
            quant_pre_process(str(Path(tmp) / "raw.onnx"), str(prepared))
        target = Path(tmp) / "int8.onnx"
        if how == "dynamic-all":
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
        else:
            name = onnx.load(str(prepared)).graph.input[0].name
            quantize_static(
                str(prepared), str(target), calibration_reader(name, calibration),
                quant_format=QuantFormat.QOperator, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
        return target.read_bytes()


def int8_variants(
    label: str, model: nn.Module, sample: torch.Tensor, calib: lp.data.Dataset, args: Any
) -> list[Variant]:
    """fp32 ONNX and every int8 path of ``model``."""
    exported = compress.export_onnx(model, sample)
    assert exported.onnx is not None
    out = [onnx_variant(f"{label} fp32 ONNX", exported.onnx, args.threads, False)]
    t = args.threads
    x = calib.features[:512]

    def lp_int8(name: str, note: str = "", **kw: Any) -> None:
        result = compress.quantize(exported, calibration=calib, **kw)
        assert result.onnx is not None
        out.append(onnx_variant(f"{label} {name}", result.onnx, t, True, note))

    if args.conv_paths:
        out.append(onnx_variant(f"{label} int8 ORT dynamic, all ops", raw_ort(exported.onnx, x,
                   "dynamic-all"), t, True, "ConvInteger + MatMulInteger"))  # fmt: skip
    lp_int8("int8 ORT dynamic, MatMul/Gemm", "lp method='dynamic'", method="dynamic")
    lp_int8("int8 ORT static QDQ", "lp default: per-channel, MinMax", method="static")
    lp_int8("int8 ORT static QOperator", "per-channel, MinMax", quant_format="qoperator")
    if args.conv_paths:
        out.append(onnx_variant(f"{label} int8 ORT static QOperator, Relu not moved",
                   raw_ort(exported.onnx, x, "static", move_relu=False), t, True,
                   "ORT's quantizer on the graph as exported"))  # fmt: skip
    if not args.quick:
        for method in ("entropy", "percentile"):
            lp_int8(f"int8 ORT static QDQ, {method}", "", calibrate=method)
    return out


def measure(variants: list[Variant], x: dict[int, np.ndarray], repeats: int) -> None:
    """Interleaved timing: each repeat times every variant once per batch size."""
    calls: dict[tuple[str, int], int] = {}
    for v in variants:  # warm up, and size each measurement to ~60 ms
        for batch in (1, 64):
            v.run(x[batch])
            started = time.perf_counter()
            v.run(x[batch])
            calls[v.name, batch] = max(3, int(0.06 / max(time.perf_counter() - started, 1e-5)))
    for r in range(repeats):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            for batch in (1, 64):
                n = calls[v.name, batch]
                started = time.perf_counter()
                for _ in range(n):
                    v.run(x[batch])
                v.times[batch].append((time.perf_counter() - started) / n * 1000)


def duel(variants: list[Variant], x: np.ndarray, rounds: int) -> dict[str, Any]:
    """Short rounds, many of them: how often each int8 format beats fp32 ONNX and the other
    format at batch 64 (the long table's rounds are too far apart on a shared machine)."""
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            started = time.perf_counter()
            for _ in range(5):
                v.run(x)
            times[v.name].append((time.perf_counter() - started) / 5 * 1000)
    fp32, qdq, qop = (times[v.name] for v in variants)
    wins = lambda a, b: sum(i < j for i, j in zip(a, b, strict=True))  # noqa: E731
    out = {"rounds": rounds, "b64_ms": {k: statistics.median(t) for k, t in times.items()},
           "qdq_beats_fp32": wins(qdq, fp32), "qoperator_beats_fp32": wins(qop, fp32),
           "qdq_beats_qoperator": wins(qdq, qop)}  # fmt: skip
    ms = out["b64_ms"]
    print(
        f"\nhead to head at batch 64, {rounds} short rounds: fp32 ONNX {ms[variants[0].name]:.2f}"
        f" ms, QDQ {ms[variants[1].name]:.2f} ms (faster than fp32 in {out['qdq_beats_fp32']}),"
        f" QOperator {ms[variants[2].name]:.2f} ms (faster than fp32 in "
        f"{out['qoperator_beats_fp32']}); QDQ faster than QOperator in "
        f"{out['qdq_beats_qoperator']}/{rounds}"
    )
    return out


def accuracy(v: Variant, test: lp.data.Dataset) -> float:
    assert test.targets is not None
    x, y = test.features.numpy(), test.targets.numpy()
    preds = np.concatenate([v.run(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return float((preds == y).mean())


def report(
    title: str, variants: list[Variant], extra: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Print the markdown table (ratios against fp32 PyTorch and fp32 ONNX); the rows."""
    base, onnx32 = variants[0], variants[1]
    med = {v.name: {b: statistics.median(v.times[b]) for b in (1, 64)} for v in variants}
    rows = []
    print(f"\n### {title}\n")
    print(
        "| variant | size MB | smaller | b1 ms | b64 ms | b64 speed-up vs PyTorch | "
        "vs fp32 ONNX | accuracy | loss (pts) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        m = med[v.name]
        row = {
            "variant": v.name, "bytes": v.size, "smaller": base.size / v.size, "b1_ms": m[1],
            "b64_ms": m[64], "speedup_b64": med[base.name][64] / m[64],
            "speedup_b64_vs_onnx": med[onnx32.name][64] / m[64], "accuracy": v.accuracy,
            "loss_pts": 100 * (base.accuracy - v.accuracy), "int8": v.int8, "note": v.note,
        }  # fmt: skip
        rows.append(row)
        note = f" ({v.note})" if v.note else ""
        print(
            f"| {v.name}{note} | {v.size / 1e6:.3f} | {row['smaller']:.2f}x | {m[1]:.3f} | "
            f"{m[64]:.2f} | {row['speedup_b64']:.2f}x | {row['speedup_b64_vs_onnx']:.2f}x | "
            f"{100 * v.accuracy:.2f}% | {row['loss_pts']:+.2f} |"
        )
    nan = float("nan")
    if extra:
        eager = next((r["b64_ms"] for r in extra if "eager" in r["variant"]), nan)
        print("\nIn one process, in one interleaved loop (the torchao venv):\n")
        print("| variant | b1 ms | b64 ms | b64 speed-up vs eager fp32 | accuracy |")
        print("|---|---|---|---|---|")
    for row in extra:
        note = f" ({row['note']})" if row.get("note") else ""
        print(
            f"| {row['variant']}{note} | {row.get('b1_ms', nan):.3f} | "
            f"{row.get('b64_ms', nan):.2f} | {eager / row.get('b64_ms', nan):.2f}x | "
            f"{100 * row.get('accuracy', nan):.2f}% |"
        )
    # the fastest int8 path that keeps the accuracy and the size; else the fastest one
    within = [r for r in rows if r["int8"] and r["loss_pts"] <= 0.5]
    if within:
        small = [r for r in within if r["smaller"] >= 3.5] or within
        best = max(small, key=lambda r: r["speedup_b64"])
        size_ok = "met" if best["smaller"] >= 3.5 else "MISSED"
        speed_ok = "met" if best["speedup_b64"] >= 1.5 else "MISSED"
        print(
            f"\nbest int8 path within 0.5 pt: {best['variant']}: {best['smaller']:.2f}x smaller "
            f"({size_ok}), {best['speedup_b64']:.2f}x faster at batch 64 than fp32 PyTorch "
            f"({speed_ok}), {best['speedup_b64_vs_onnx']:.2f}x than fp32 ONNX, "
            f"{best['loss_pts']:+.2f} pt"
        )
    return rows + extra


@dataclass
class Setup:
    """What every model's measurement shares."""

    args: Any
    train: lp.data.Dataset
    test: lp.data.Dataset
    calib: lp.data.Dataset
    repeats: int
    tag: str


def measure_model(
    label: str, model: nn.Module, key: str, student_config: dict[str, Any], setup: Setup
) -> list[dict[str, Any]]:
    """Every variant of one model: build, check accuracy, time interleaved, report."""
    args, train, test, calib = setup.args, setup.train, setup.test, setup.calib
    print(f"\n{label}: exporting and quantizing", flush=True)
    args.conv_paths = label == "ConvNet"
    sample = test.features[:256]
    variants = [torch_variant(f"{label} fp32 PyTorch", model)]
    variants += int8_variants(label, model, sample, calib, args)
    name = "convnet" if label == "ConvNet" else "mlp"

    def new_student() -> nn.Module:
        torch.manual_seed(0)
        return lp.models.build(name, **student_config)

    def prune_into(target: nn.Module) -> None:
        slim = compress.prune(model, 0.5, finetune=train, epochs=1, seed=0).model
        target.load_state_dict(slim.state_dict())

    def distill_into(target: nn.Module) -> None:
        compress.distill(model, target, train, temperature=4.0, alpha=0.7, epochs=2, lr=2e-3)

    pruned = cached(f"{key}-pruned50", new_student, prune_into)
    variants.append(torch_variant(f"{label} pruned 50%", pruned, "structured, 1 epoch"))
    slim_int8 = compress.quantize(compress.export_onnx(pruned, sample), calibration=calib).onnx
    assert slim_int8 is not None
    variants.append(onnx_variant(f"{label} pruned 50% + int8 static", slim_int8, args.threads,
                                 False, "QDQ"))  # fmt: skip
    student = cached(f"{key}-student", new_student, distill_into)
    widths = student_config.get("num_filters") or student_config["hidden"]
    variants.append(torch_variant(f"{label} distilled student", student, f"{widths}"))
    for v in variants:
        v.accuracy = accuracy(v, test)
    print(f"{label}: timing {len(variants)} variants x {setup.repeats} repeats", flush=True)
    measure(variants, {b: test.features[:b].numpy().copy() for b in (1, 64)}, setup.repeats)
    extra = []
    if label == "ConvNet" and not (args.quick or args.no_torchao):
        same_loop = [f"{label} fp32 ONNX", f"{label} int8 ORT static QDQ",
                     f"{label} int8 ORT static QOperator"]  # fmt: skip
        onnx = {f"{v.name} (ORT)": v.onnx for v in variants if v.name in same_loop and v.onnx}
        extra = torchao_rows(args, key, setup.repeats, len(test), onnx)
    rows = report(f"{label} on MNIST ({len(test):,} test images)", variants, extra)
    by_name = {v.name: v for v in variants}
    names = [
        f"{label} fp32 ONNX",
        f"{label} int8 ORT static QDQ",
        f"{label} int8 ORT static QOperator",
    ]
    head = duel([by_name[n] for n in names], test.features[:64].numpy().copy(),
                10 if args.quick else 30)  # fmt: skip
    return [*rows, {"variant": "head to head", **head}]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no torchao")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--no-torchao", action="store_true", help="skip the torchao venv")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 9)
    torch.set_num_threads(args.threads)
    train = lp.data.load("mnist", split="train").subset(slice(0, args.train_rows))
    test = lp.data.load("mnist", split="test")
    if args.quick:
        test = test.subset(slice(0, 2000))
    calib = lp.data.load("mnist", split="train").subset(slice(50_000, 50_512))  # unseen rows
    setup = Setup(args, train, test, calib, repeats, str(args.train_rows))

    def trainer(epochs: int, lr: float) -> Callable[[nn.Module], None]:
        def train_it(model: nn.Module) -> None:
            lp.fit(model, train, epochs=epochs, batch_size=64, lr=lr, schedule="onecycle",
                   seed=0, quiet=True)  # fmt: skip

        return train_it

    print(f"torch {torch.__version__}, {args.threads} threads; training (or cache):", flush=True)
    keys = {"ConvNet": f"convnet-{setup.tag}", "MLP": f"mlp-{setup.tag}-lr3e-3"}
    torch.manual_seed(0)
    conv = cached(keys["ConvNet"], lambda: lp.models.ConvNet(**SEED_CONV), trainer(2, 2e-3))
    torch.manual_seed(0)
    mlp = cached(keys["MLP"], lambda: lp.models.MLP(784, 10, hidden=[256, 256]), trainer(2, 3e-3))
    conv_student = {**SEED_CONV, "num_filters": [16, 32, 64]}
    mlp_student = {"in_features": 784, "num_classes": 10, "hidden": [128, 128]}
    results: dict[str, Any] = {
        "threads": args.threads, "repeats": repeats, "test_rows": len(test), "models": {
            "ConvNet": measure_model("ConvNet", conv, keys["ConvNet"], conv_student, setup),
            "MLP": measure_model("MLP", mlp, keys["MLP"], mlp_student, setup),
        },
    }  # fmt: skip
    path = RUNS / f"compress-{args.threads}-threads.json"
    RUNS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"\nall figures: {path.relative_to(HERE.parent)}")


def torchao_rows(
    args: Any, key: str, repeats: int, test_rows: int, onnx: dict[str, bytes]
) -> list[dict[str, Any]]:
    """torchao's PT2E int8 and torch.compile fp32, measured in the torchao venv in one loop
    with eager fp32 and the ``onnx`` models (so that these rows compare with each other)."""
    from compress_torchao import ensure_venv

    try:
        python = ensure_venv()
    except subprocess.CalledProcessError as exc:
        return [{"variant": "torchao int8", "note": f"not installable here: {exc}"}]
    out = ignored(CACHE) / "torchao.json"
    cmd = [str(python), str(HERE / "compress_torchao.py"), "--weights",
           str(CACHE / f"{key}.safetensors"), "--threads", str(args.threads), "--repeats",
           str(repeats), "--test-rows", str(test_rows), "--out", str(out)]  # fmt: skip
    for i, (name, data) in enumerate(onnx.items()):
        path = CACHE / f"torchao-onnx-{i}.onnx"
        path.write_bytes(data)
        cmd += ["--onnx", name, str(path)]
    print("ConvNet: torchao (PT2E + torch.compile) in benchmarks/.venvs/torchao", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        return [{"variant": "torchao int8", "note": f"failed: {tail}"}]
    return json.loads(out.read_text())  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
