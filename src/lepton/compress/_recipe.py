"""The compression recipe: one definition of "compress a registered model".

``lepton compress`` (and a platform ``compress`` job) run :func:`run` with a
:class:`CompressConfig`, whose defaults are defined here and nowhere else: load the
version -> prune and fine-tune (optional) -> quantize to int8 ONNX (optional) -> test ->
register the result as a new version whose lineage says ``derived_from`` the original,
with this config as the recipe.

Example:
    >>> config = CompressConfig(model="mnist-convnet@production", quantize="static")
    >>> outcome = run(config)  # doctest: +SKIP
    >>> outcome.registered, outcome.report.ratio  # doctest: +SKIP
    ('mnist-convnet:2', 3.9)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from torch import nn

from lepton.compress._prune import prune
from lepton.compress._quantize import quantize
from lepton.compress._report import Compressed, CompressReport
from lepton.compress._source import dataset, figures, open_source, publish
from lepton.errors import LeptonError
from lepton.registry._registry import validate_name
from lepton.storage import Database
from lepton.train.recipe import RecipeConfig, catalog_name

__all__ = ["CompressConfig", "CompressOutcome", "run"]

_REF = r"^[a-z0-9][a-z0-9._-]{0,99}((:[0-9]{1,9})|(@[a-z0-9_-]{1,64}))?$"


class CompressConfig(RecipeConfig):
    """What to compress and how: plain JSON-safe values (a job spec can carry them).

    Values are checked strictly and the instance is frozen.

    Attributes:
        model: The registered version to compress: ``"name"``, ``"name:3"`` or
            ``"name@production"``.
        quantize: ``"static"`` (int8 convolutions and linear layers, calibrated),
            ``"dynamic"`` (int8 linear layers) or ``None`` (no quantization).
        quant_format: ``"qdq"`` or ``"qoperator"`` ONNX int8 nodes.
        calibrate: ``"minmax"``, ``"entropy"`` or ``"percentile"`` activation ranges.
        calibration_size: Rows of ``data``'s training split to calibrate on.
        prune: Fraction of channels (or weights) to remove first, in (0, 1); ``None``:
            no pruning.
        structured: Remove whole channels (smaller and faster) or single weights.
        finetune_epochs: Epochs of fine-tuning after pruning.
        finetune_limit: Fine-tune on the first N training rows (all when ``None``).
        data: Catalog dataset for calibration, fine-tuning and the accuracy test.
        test_limit: Test on the first N rows of the test split (all when ``None``).
        tolerance: Refuse an int8 model whose outputs drift more than this from fp32.
        seed: Seeds the fine-tuning.
        register_as: Register under this name (``"register"`` in JSON); default: a new
            version of the source model.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    model: str = Field(..., pattern=_REF, description="Registered version to compress.")
    quantize: Literal["static", "dynamic"] | None = "static"
    quant_format: Literal["qdq", "qoperator"] = "qdq"
    calibrate: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_size: int = Field(512, ge=1, le=100_000)
    prune: float | None = Field(None, gt=0, lt=1, description="Fraction to remove.")
    structured: bool = True
    finetune_epochs: int = Field(1, ge=1, le=100)
    finetune_limit: int | None = Field(10_000, ge=1, le=100_000_000)
    data: str = Field("mnist", description="Catalog dataset (`lepton data list`).")
    test_limit: int | None = Field(None, ge=1, le=100_000_000)
    tolerance: float | None = Field(None, gt=0, le=1e6)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    register_as: str | None = Field(None, alias="register", description="Register as.")

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str) -> str:
        return catalog_name(value)

    @field_validator("register_as")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                validate_name(value)
            except LeptonError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _something_to_do(self) -> CompressConfig:
        if self.quantize is None and self.prune is None:
            raise ValueError("nothing to do: set quantize ('static' or 'dynamic') or prune")
        return self


@dataclass(frozen=True)
class CompressOutcome:
    """What :func:`run` returns.

    Attributes:
        config: The config it ran.
        model: The final model (an ``OnnxModule`` after quantization).
        report: The whole recipe's report: original vs final sizes and accuracy.
        steps: Each step's own report, in order.
        registered: The new version's reference, when registered.
        onnx: The final ONNX file's bytes, when the result is ONNX.
    """

    config: CompressConfig
    model: nn.Module
    report: CompressReport
    steps: list[CompressReport]
    registered: str | None
    onnx: bytes | None


def run(
    config: CompressConfig,
    *,
    register: bool = True,
    database: Database | None = None,
    say: Callable[[str], None] | None = None,
    quiet: bool = True,
) -> CompressOutcome:
    """Compress ``config.model`` as ``config`` says and register the result.

    Args:
        config: What to do.
        register: ``False`` skips the registration (a dry run).
        database: The metadata database of the registry.
        say: Receives one line per step, e.g. ``print``.
        quiet: No progress bar from the fine-tuning.

    Returns:
        The :class:`CompressOutcome`.

    Raises:
        LeptonError: Whatever loading, pruning, quantizing or registering raises.
    """
    started = time.perf_counter()
    tell = say or (lambda _: None)
    source = open_source(config.model, database=database)
    tell(f"compress {source.ref}: {type(source.model).__name__}")
    test = dataset(config.data, "test", config.test_limit)
    steps: list[Compressed] = []
    current = source.model
    if config.prune is not None:
        finetune = dataset(config.data, "train", config.finetune_limit)
        tell(f"prune {config.prune:g} ({'channels' if config.structured else 'weights'}), "
             f"fine-tune {config.finetune_epochs} epoch(s) on {len(finetune)} rows")  # fmt: skip
        steps.append(prune(
            current, config.prune, config.structured, finetune=finetune,
            epochs=config.finetune_epochs, seed=config.seed, test=test, register=False,
            database=database, quiet=quiet,
        ))  # fmt: skip
        current = steps[-1].model
        tell(steps[-1].report.lines()[0])
    if config.quantize is not None:
        tell(f"quantize ({config.quantize}, {config.quant_format}, {config.calibrate})")
        steps.append(quantize(
            current, config.quantize, config.data, quant_format=config.quant_format,
            calibrate=config.calibrate, calibration_size=config.calibration_size, test=test,
            tolerance=config.tolerance, register=False, database=database,
        ))  # fmt: skip
        current = steps[-1].model
        tell(steps[-1].report.lines()[0])
    first, last = steps[0].report, steps[-1].report
    recipe = config.model_dump(mode="json", by_alias=True)
    metrics = {"accuracy": last.accuracy_after} if last.accuracy_after is not None else {}
    retrained = config.prune is not None  # outputs of a retrained model are not a parity
    registered = None
    if register:
        measured = figures(
            test, first.accuracy_before, last.accuracy_after,
            None if retrained else last.max_abs_diff, None if retrained else last.agreement,
        )  # fmt: skip
        registered = publish(
            current, source=source, register=config.register_as or True, step="compress",
            recipe=recipe, metrics=metrics, onnx=steps[-1].onnx, data=test,
            measured=measured, database=database,
        )  # fmt: skip
        tell(f"registered as {registered}")
    report = CompressReport(
        step="compress", recipe=recipe, kind=last.kind, source=source.ref,
        size_before=first.size_before, size_after=last.size_after,
        parameters_before=first.parameters_before, parameters_after=last.parameters_after,
        max_abs_diff=None if retrained else last.max_abs_diff,
        agreement=None if retrained else last.agreement, tolerance=config.tolerance,
        accuracy_before=first.accuracy_before, accuracy_after=last.accuracy_after,
        registered=registered, seconds=time.perf_counter() - started,
        details={"steps": [s.report.to_dict() for s in steps]},
    )  # fmt: skip
    return CompressOutcome(
        config=config, model=current, report=report, steps=[s.report for s in steps],
        registered=registered, onnx=steps[-1].onnx,
    )  # fmt: skip
