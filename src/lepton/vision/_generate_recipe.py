"""The generation recipe: "train a class-conditional generator, measure its samples,
register it".

``lepton vision generate train`` and a platform ``generate`` job run it with a
:class:`GenerateConfig`: MNIST or Fashion-MNIST (the first ``rows`` training images) -> a
:class:`~lepton.vision.Generator` (a conditional VAE, or a DDPM) trained with ``lp.fit``
-> its samples judged by a ConvNet trained here on the same images (how often it sees the
class asked for, and the Frechet distance to real test images beside the distance
between two halves of the real test set: **not the Inception FID**) -> registered when
asked, so ``lepton deploy`` serves ``/sample`` and the dashboard's gallery draws it.
Everything is logged to one tracking run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, Field

from lepton.data import load
from lepton.models import build
from lepton.storage import Database
from lepton.tracking import start_run
from lepton.train import fit
from lepton.train.recipe import RecipeConfig, register_when_asked, require_registrar
from lepton.vision._generator import Generator
from lepton.vision._quality import sample_quality

__all__ = ["GenerateConfig", "GenerateResult", "generate"]


class GenerateConfig(RecipeConfig):
    """What to train and how to judge it. Checked strictly and frozen; a platform
    ``GenerateJob`` is this class plus its ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    dataset: Literal["mnist", "fashion-mnist"] = Field("mnist", description="The images.")
    model: Literal["vae", "ddpm"] = Field(
        "vae", description="vae (minutes on a CPU) or ddpm (diffusion: wants a GPU)."
    )
    rows: int = Field(60_000, ge=100, le=60_000, description="Training images (the first N).")
    epochs: int = Field(20, ge=1, le=1000, description="Passes over the training images.")
    batch_size: int = Field(128, ge=1, le=4096, description="Images per step.")
    lr: float = Field(2e-3, gt=0, le=10, description="Peak AdamW learning rate (one-cycle).")
    latent: int = Field(2, ge=1, le=256, description="The VAE's code size.")
    temperature: float = Field(0.8, ge=0, le=2, description="VAE code spread when measured.")
    steps: int = Field(25, ge=1, le=1000, description="DDIM steps when measured (ddpm).")
    guidance: float = Field(2.0, ge=0, le=20, description="Guidance when measured (ddpm).")
    samples: int = Field(1000, ge=10, le=5000, description="Images generated to measure.")
    judge_epochs: int = Field(
        3, ge=0, le=100, description="Epochs of the judging ConvNet (0: do not measure)."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)
    register_as: str | None = Field(
        None, alias="register", description="Register the generator under this name."
    )


@dataclass
class GenerateResult:
    """What a generation run measured and made."""

    metrics: dict[str, float]
    losses: list[float]
    classes: list[str]
    rows: int
    seconds: float
    train_seconds: float
    run_id: int | None = None
    registered: str | None = None
    generator: Generator | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe, without the trained generator."""
        return {
            "metrics": self.metrics, "losses": self.losses, "classes": self.classes,
            "rows": self.rows, "seconds": self.seconds, "train_seconds": self.train_seconds,
            "run_id": self.run_id, "registered": self.registered,
        }  # fmt: skip


def generate(
    config: GenerateConfig,
    *,
    registrar: Callable[..., Any] | None = None,
    database: Database | None = None,
    say: Callable[[str], None] | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    on_run: Callable[[int], None] | None = None,
    num_threads: int | None = None,
) -> GenerateResult:
    """Train, judge and, when ``config.register_as`` is set, register a generator,
    tracked as one run (arguments as :func:`lepton.vision.recipe.run`'s).

    Raises:
        ConfigError: ``register`` is set but no ``registrar`` was given.
    """
    tell = say or (lambda _: None)
    require_registrar(config, registrar)
    started = time.perf_counter()
    train = load(config.dataset, split="train").subset(slice(0, config.rows))
    test = load(config.dataset, split="test")
    options = {"latent": config.latent} if config.model == "vae" else {}
    gen = Generator(train.classes or 10, kind=config.model, **options)
    threads: dict[str, Any] = {"num_threads": num_threads} if num_threads else {}
    params = config.model_dump(mode="json", by_alias=True)
    name = run_name or f"generate-{config.dataset}-{config.model}"
    with start_run(name, params=params, tags=tags, database=database) as tracked:
        if on_run is not None:
            on_run(tracked.id)
        tell(f"training a {config.model} on {len(train):,} {config.dataset} images for "
             f"{config.epochs} epochs")  # fmt: skip
        gen.fit(train, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                seed=config.seed, **threads)  # fmt: skip
        assert gen.result is not None
        losses = [float(r.train["loss"]) for r in gen.result.history]
        for epoch in sorted({1, len(losses) // 2, len(losses)} - {0}):
            tell(f"epoch {epoch}/{config.epochs}: loss {losses[epoch - 1]:.4f}")
        metrics: dict[str, float] = {"train_loss": losses[-1]}
        if config.judge_epochs:
            tell(f"judging {config.samples} samples with a ConvNet trained here "
                 f"({config.judge_epochs} epoch{'s' * (config.judge_epochs != 1)})")  # fmt: skip
            judge = build("convnet", num_classes=len(train.classes or range(10)),
                          num_filters=[32, 64], dropout=0.25)  # fmt: skip
            fit(judge, train, epochs=config.judge_epochs, batch_size=128, lr=2e-3,
                schedule="onecycle", seed=config.seed, quiet=True, **threads)  # fmt: skip
            draw = {"temperature": config.temperature} if config.model == "vae" else {
                "steps": config.steps, "guidance": config.guidance}  # fmt: skip
            metrics |= sample_quality(gen, test, judge, n=config.samples, seed=config.seed, **draw)
            tell(f"samples recognised as the class asked for: {metrics['label_accuracy']:.1%} "
                 f"(real test images: {metrics['real_label_accuracy']:.1%}); Frechet distance "
                 f"{metrics['frechet_distance']:.2f} (two real halves: "
                 f"{metrics['frechet_floor']:.2f}; not the Inception FID)")  # fmt: skip
        tracked.log_metrics(metrics, step=0)
        registered = register_when_asked(
            config, registrar, gen.model, say=tell, metrics=metrics, dataset=train, run=tracked,
            database=database,
            description=f"class-conditional {config.model} on {config.dataset} "
            f"({len(train):,} images, {config.epochs} epochs)",
        )  # fmt: skip
        return GenerateResult(
            metrics=metrics, losses=losses, classes=gen.classes, rows=len(train),
            seconds=time.perf_counter() - started, train_seconds=gen.result.seconds,
            run_id=tracked.id, registered=registered, generator=gen,
        )  # fmt: skip
