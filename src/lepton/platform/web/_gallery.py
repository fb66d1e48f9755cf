"""The Gallery page: pick a registered image generator (:class:`lepton.vision.Generator`),
a class, how many images and a seed, and see what it draws.

The images come from the very sampling a deployment's ``/sample`` runs
(:func:`lepton.serve._generate_image.sample_pngs`), in the platform's process: a version
can be looked at before (or without) being deployed. The PNGs are shown as ``data:``
URIs (the dashboard's CSP allows ``img-src data:``); a few generators are kept loaded.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from lepton import registry
from lepton.errors import LeptonError
from lepton.platform._deps import P
from lepton.platform._http import allow
from lepton.platform.web._loaded import Loaded, versions_of
from lepton.platform.web._render import render
from lepton.serve._generate_image import MAX_IMAGES, GeneratorService, SampleRequest, sample_pngs
from lepton.storage import Database
from lepton.vision._generator import GENERATOR_ARCHITECTURES

__all__ = ["generator_versions", "router"]

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Query(max_length=100)]


def _generator(ref: str, database: Database) -> GeneratorService:
    return GeneratorService(ref, database=database)


_service: Loaded[GeneratorService] = Loaded(_generator)


def generator_versions(database: Database) -> list[registry.ModelVersion]:
    """Every ready image-generator version, newest first."""
    return versions_of(database, GENERATOR_ARCHITECTURES)


@router.get("/gallery")
@allow("viewer")
def gallery(
    p: P,
    request: Request,
    model: Text = "",
    label: Text = "",
    n: Annotated[int, Query(ge=1, le=MAX_IMAGES)] = 16,
    steps: Annotated[int, Query(ge=1, le=250)] = 25,
    guidance: Annotated[float, Query(ge=0, le=20)] = 2.0,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    temperature: Annotated[float, Query(ge=0, le=2)] = 1.0,
) -> Response:
    """The generators, and samples of the chosen one (the newest when none is chosen)."""
    versions = generator_versions(p.db)
    refs = [v.ref for v in versions]
    chosen = model if model in refs else (refs[0] if refs else "")
    problems: list[str] = []
    images: list[tuple[str, str]] = []  # (data URI, class name)
    classes: list[str] = []
    kind = ""
    if model and model not in refs:
        problems.append(f"{model!r} is not a registered image generator; pick one from the list")
    if chosen:
        try:
            service = _service(chosen, p.db)
            generator = service.generator
            classes, kind = generator.classes, generator.kind
            wanted = SampleRequest(n=n, label=label or None, steps=steps, guidance=guidance,
                                   seed=seed, temperature=temperature)  # fmt: skip
            indices, pngs, _ = sample_pngs(generator, wanted)
            images = [
                (f"data:image/png;base64,{base64.b64encode(png).decode()}", classes[i])
                for i, png in zip(indices, pngs, strict=True)
            ]
        except (LeptonError, ValidationError) as exc:
            problems.append(exc.message if isinstance(exc, LeptonError) else str(exc))
    return render(
        request, "gallery.html", section="/gallery", versions=versions, chosen=chosen,
        classes=classes, kind=kind, label=label, n=n, steps=steps, guidance=guidance,
        seed=seed, temperature=temperature, images=images, problems=problems, max_images=MAX_IMAGES,
    )  # fmt: skip
