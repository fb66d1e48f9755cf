"""PyTorch 2 export quantization of the seed ConvNet: torchao's X86InductorQuantizer +
``torch.compile``, measured beside ``torch.compile`` of the fp32 model and eager fp32.

torchao is not a Lepton dependency, so this runs in its own venv,
``benchmarks/.venvs/torchao``, created on first use by ``benchmarks/compress.py``. That venv
holds only torchao (its wheel declares no dependencies); a ``.pth`` file adds the repo
venv's site-packages, so it runs on exactly the repo's torch (nothing is replaced).

    benchmarks/.venvs/torchao/bin/python benchmarks/compress_torchao.py --weights W --out O
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
VENV = HERE / ".venvs" / "torchao"
TORCHAO = "torchao==0.18.0"
SEED_CONV = {"num_classes": 10, "num_filters": [32, 64, 128], "kernel_size": 3, "dropout": 0.5}


def ensure_venv() -> Path:
    """The torchao venv's interpreter, creating the venv the first time."""
    python = VENV / "bin" / "python"
    stamp = VENV / "installed.txt"
    if stamp.exists():
        return python
    HERE.joinpath(".venvs").mkdir(exist_ok=True)
    (HERE / ".venvs" / ".gitignore").write_text("*\n")
    print(f"installing {TORCHAO} into {VENV.relative_to(HERE.parent)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    repo_site = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # `import` lines of a .pth run at start-up: addsitedir also runs the repo venv's own
    # .pth files (the editable lepton install)
    Path(site, "_repo_venv.pth").write_text(f"import site; site.addsitedir({repo_site!r})\n")
    subprocess.run([str(python), "-m", "pip", "install", "-qq", "--no-deps", TORCHAO], check=True)
    stamp.write_text(TORCHAO + "\n")
    return python


def _onnx_runner(data: bytes, threads: int) -> Any:
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument(
        "--onnx", nargs=2, action="append", default=[], metavar=("NAME", "PATH"),
        help="an ONNX model to time in the same loop (onnxruntime, same threads)",
    )  # fmt: skip
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch
    import torch._inductor.config as inductor
    from safetensors.torch import load_file
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    import lepton as lp

    torch.set_num_threads(args.threads)
    inductor.freezing = True  # folds the int8 weights into packed constants
    model = lp.models.ConvNet(**SEED_CONV)
    model.load_state_dict(load_file(args.weights))
    model.eval()
    test = lp.data.load("mnist", split="test").subset(slice(0, args.test_rows))
    calib = lp.data.load("mnist", split="train").features[50_000:50_512]
    batch = {b: test.features[:b].clone() for b in (1, 64)}
    started = time.perf_counter()
    dim = torch.export.Dim("batch", min=1, max=1024)
    graph = torch.export.export(model, (batch[64],), dynamic_shapes=({0: dim},)).module()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for i in range(0, len(calib), 64):
            prepared(calib[i : i + 64])
    int8 = convert_pt2e(prepared)
    quantize_s = time.perf_counter() - started
    variants: dict[str, Any] = {
        "torch eager fp32 (this process)": model,
        "torch.compile fp32": torch.compile(model, dynamic=False),
        "torchao int8 (X86InductorQuantizer + torch.compile)": torch.compile(int8, dynamic=False),
    }
    variants = {f"ConvNet {name}": fn for name, fn in variants.items()}
    for name, path in args.onnx:  # named by the caller
        variants[name] = _onnx_runner(Path(path).read_bytes(), args.threads)
    compile_s: dict[str, float] = {}
    with torch.no_grad():
        for name, fn in variants.items():
            started = time.perf_counter()
            for b in (1, 64):  # one graph per batch size (dynamic=False)
                fn(batch[b])
            compile_s[name] = time.perf_counter() - started
        times: dict[str, dict[int, list[float]]] = {n: {1: [], 64: []} for n in variants}
        for r in range(args.repeats):
            names = list(variants)
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                for b, n in ((1, 100), (64, 10)):
                    started = time.perf_counter()
                    for _ in range(n):
                        variants[name](batch[b])
                    times[name][b].append((time.perf_counter() - started) / n * 1000)
        rows = []
        for name, fn in variants.items():
            correct = 0
            for i in range(0, len(test), 64):  # padded to 64: no new graph for the tail
                xb = test.features[i : i + 64]
                pad = torch.cat([xb, xb[:1].expand(64 - len(xb), *xb.shape[1:])])
                correct += int((fn(pad)[: len(xb)].argmax(1) == test.targets[i : i + 64]).sum())
            rows.append({
                "variant": name, "b1_ms": statistics.median(times[name][1]),
                "b64_ms": statistics.median(times[name][64]), "accuracy": correct / len(test),
                "note": (f"compile {compile_s[name]:.0f} s" if "compile" in name else "")
                + (f", quantize {quantize_s:.0f} s" if "torchao" in name else ""),
            })  # fmt: skip
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
