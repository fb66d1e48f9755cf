"""A registered image generator behind ``/sample`` and ``/info``.

``lepton deploy mnist-gen@production`` (and a platform deployment of that version) serves
a :class:`GeneratorService` when the version's architecture is a generator
(``"image-diffusion"`` or ``"image-vae"``, :class:`lepton.vision.Generator`; the table in
:mod:`lepton.serve._by_model` decides):

* ``POST /sample`` ``{"n": 4, "label": 3, "steps": 25, "guidance": 2.0, "seed": 0,
  "temperature": 1.0}`` (``steps``/``guidance`` for diffusion, ``temperature`` for a VAE):
  ``n`` generated images as base64 PNGs, one each and a grid of all of them; ``label`` is
  a class index or name (``null``: every class in turn). The same request, the same images.
* ``GET /info``: the classes, the image size and the kind of generator.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from lepton.errors import RequestError, VisionError
from lepton.serve._handler import handler
from lepton.serve._service import Service

if TYPE_CHECKING:
    from lepton.storage import Database
    from lepton.vision import Generator

__all__ = ["MAX_IMAGES", "GeneratorService", "SampleAnswer", "SampleRequest"]

#: The most images one ``/sample`` draws (the sampling runs in the request).
MAX_IMAGES = 64
MAX_STEPS = 250


class SampleRequest(BaseModel):
    """Images of one class (or of every class in turn)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=4, ge=1, le=MAX_IMAGES, description="How many images.")
    label: int | str | None = Field(
        default=None, description="A class index or name; null cycles through the classes."
    )
    steps: int = Field(default=25, ge=1, le=MAX_STEPS, description="DDIM steps (diffusion).")
    guidance: float = Field(
        default=2.0, ge=0, le=20, description="Classifier-free guidance scale (diffusion)."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="The same seed, the same images.")
    temperature: float = Field(
        default=1.0,
        ge=0,
        le=2,
        description="Spread of the codes drawn (VAE): below 1, more typical.",
    )


class SampleAnswer(BaseModel):
    """The images as base64-encoded PNGs, their classes, and a grid of all of them."""

    model: str
    labels: list[str]
    images: list[str] = Field(description="One base64 PNG per image.")
    grid: str = Field(description="A base64 PNG of all the images, up to 8 a row.")
    seconds: float


def sample_pngs(
    generator: Generator, request: SampleRequest
) -> tuple[list[int], list[bytes], bytes]:
    """The classes, one PNG per image and a grid PNG for ``request`` (also used by the
    dashboard gallery)."""
    label = request.label
    if (
        isinstance(label, str)
        and label.strip().lstrip("-").isdigit()
        and label not in generator.classes
    ):
        label = int(label)  # "3" for a model whose classes are names
    try:
        images = generator.sample(request.n, label=label, steps=request.steps,
                                  guidance=request.guidance, seed=request.seed,
                                  temperature=request.temperature)  # fmt: skip
        labels = generator.label_indices(request.n, label)
    except VisionError as exc:
        raise RequestError(exc.message) from None
    return labels, [generator.to_png(im) for im in images], generator.to_png(images, columns=8)


class GeneratorService(Service):
    """A registered generator version (``lp.vision.Generator``) as a service."""

    def __init__(self, ref: str, *, database: Database | None = None) -> None:
        self.ref = ref
        self.database = database

    def setup(self) -> None:
        from lepton.registry import resolve
        from lepton.vision import Generator

        self.version = resolve(self.ref, database=self.database)
        self.generator = Generator.load(self.version.ref, database=self.database)

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The model, its kind, classes and image shape."""
        m = self.generator.model
        return {
            "model": self.version.ref,
            "kind": self.generator.kind,
            "classes": self.generator.classes,
            "image_shape": [m.in_channels, m.image_size, m.image_size],
            "max_images": MAX_IMAGES,
        }

    @handler(workers=2)
    def sample(self, request: SampleRequest) -> SampleAnswer:
        """``n`` images of class ``label`` as PNGs."""
        started = time.perf_counter()
        labels, pngs, grid = sample_pngs(self.generator, request)
        names = self.generator.classes
        return SampleAnswer(
            model=self.version.ref,
            labels=[names[i] for i in labels],
            images=[base64.b64encode(p).decode() for p in pngs],
            grid=base64.b64encode(grid).decode(),
            seconds=time.perf_counter() - started,
        )
