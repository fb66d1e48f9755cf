"""``lepton compress``: int8-quantize and/or prune a registered model, register the result."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from lepton.compress import CompressConfig, CompressOutcome, CompressReport
from lepton.compress import run as run_recipe

__all__ = ["compress"]

console = Console(highlight=False, soft_wrap=True)
DEFAULT = CompressConfig.model_construct()  # every default once, in the recipe


def _percent(value: float | None) -> str:
    return f"{100 * value:.2f}%" if value is not None else "-"


def _table(outcome: CompressOutcome) -> Table:
    table = Table(title=f"compress {outcome.report.source}", title_justify="left")
    for column in ("step", "kind", "size before", "size after", "smaller",
                   "max abs diff", "accuracy before", "accuracy after"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("step", "kind") else "right")

    def row(report: CompressReport, name: str) -> None:
        table.add_row(
            name, report.kind, f"{report.size_before / 1e6:.3f} MB",
            f"{report.size_after / 1e6:.3f} MB", f"{report.ratio:.2f}x",
            f"{report.max_abs_diff:.3g}" if report.max_abs_diff is not None else "-",
            _percent(report.accuracy_before), _percent(report.accuracy_after),
        )  # fmt: skip

    for step in outcome.steps:
        row(step, step.step)
    if len(outcome.steps) > 1:
        row(outcome.report, "total")
    return table


def compress(
    model: str = typer.Argument(
        ..., help="The registered version to compress: NAME, NAME:VERSION or NAME@STAGE."
    ),
    quantize: str = typer.Option(
        str(DEFAULT.quantize),
        help="static (int8 convolutions + linear layers, calibrated), dynamic (int8 linear "
        "layers) or none.",
    ),
    data: str = typer.Option(
        DEFAULT.data,
        "--calibration",
        "--data",
        help="Catalog dataset: calibration (train split), fine-tuning and the test split.",
    ),
    quant_format: str = typer.Option(
        DEFAULT.quant_format, "--format", help="int8 ONNX nodes: qdq or qoperator."
    ),
    calibrate: str = typer.Option(
        DEFAULT.calibrate, help="Activation ranges: minmax, entropy or percentile."
    ),
    calibration_size: int = typer.Option(DEFAULT.calibration_size, help="Calibration rows."),
    prune: float | None = typer.Option(
        DEFAULT.prune, help="First remove this fraction of channels, e.g. 0.5 (then fine-tune)."
    ),
    structured: bool = typer.Option(
        DEFAULT.structured,
        "--structured/--unstructured",
        help="Prune whole channels (smaller, faster) or single weights (sparser).",
    ),
    finetune_epochs: int = typer.Option(
        DEFAULT.finetune_epochs, help="Fine-tuning epochs after pruning."
    ),
    finetune_limit: int | None = typer.Option(
        DEFAULT.finetune_limit, help="Fine-tune on the first N training rows."
    ),
    test_limit: int | None = typer.Option(
        DEFAULT.test_limit, help="Test on the first N test rows (default: all)."
    ),
    tolerance: float | None = typer.Option(
        DEFAULT.tolerance, help="Refuse an int8 model whose outputs drift more than this."
    ),
    seed: int = typer.Option(DEFAULT.seed, help="Seed of the fine-tuning."),
    register: str | None = typer.Option(
        DEFAULT.register_as, help="Register under this name (default: a new version of MODEL)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only; register nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
) -> None:
    """Make a registered model smaller and faster, and register the result.

    Quantization exports the model to ONNX and converts it to int8 with ONNX Runtime
    (weights per channel, activations calibrated on real data); pruning removes whole
    channels and fine-tunes. The report shows the size before and after, the largest
    output difference from the original and the test accuracy of both. The result is
    registered as a new version whose lineage names the original and this recipe; deploy
    it like any other (`lepton deploy NAME:VERSION`).

    Example: `lepton compress mnist-convnet@production --quantize static --calibration
    mnist`, or `--prune 0.5 --quantize none` to prune only.
    """
    recipe = CompressConfig.checked(
        model=model, quantize=None if quantize.lower() == "none" else quantize, data=data,
        quant_format=quant_format, calibrate=calibrate, calibration_size=calibration_size,
        prune=prune, structured=structured, finetune_epochs=finetune_epochs,
        finetune_limit=finetune_limit, test_limit=test_limit, tolerance=tolerance, seed=seed,
        register=register,
    )  # fmt: skip
    say = None if as_json else (lambda line: console.print(f"[dim]{line}[/]"))
    outcome = run_recipe(recipe, register=not dry_run, say=say)
    if as_json:
        print(json.dumps(outcome.report.to_dict(), indent=2))
        return
    console.print(_table(outcome))
    for line in outcome.report.lines()[1:]:
        console.print(line.strip())
    if outcome.registered is not None:
        console.print(f"deploy it: `lepton deploy {outcome.registered}`")
