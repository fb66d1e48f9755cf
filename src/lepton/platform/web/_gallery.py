"""The Gallery page: pick a registered image generator (:class:`lepton.vision.Generator`),
a class, how many images and a seed, and see what it draws; editors submit a ``generate``
job (train, judge and register a generator) from the same page.

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
from lepton.platform._deps import Caller, P
from lepton.platform._http import allow
from lepton.platform._state import Platform
from lepton.platform.jobs._specs import GenerateJob
from lepton.platform.web._loaded import Loaded, versions_of
from lepton.platform.web._render import (
    FormText,
    form_problems,
    job_form_defaults,
    optional_int,
    redirect,
    render,
    submit_job_form,
)
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
        job_form=_job_defaults(), job_error="",
    )  # fmt: skip


_JOB_FIELDS = ("dataset", "model", "rows", "epochs", "latent")


def _job_defaults() -> dict[str, str]:
    """The job form's first values: the recipe's own defaults."""
    return job_form_defaults(GenerateJob, _JOB_FIELDS, ("register",))


def _job_page(p: Platform, request: Request, job_form: dict[str, str], job_error: str) -> Response:
    return render(
        request, "gallery.html", section="/gallery", status=422,
        versions=generator_versions(p.db), chosen="", classes=[], kind="", label="", n=16,
        steps=25, guidance=2.0, seed=0, temperature=1.0, images=[], problems=[],
        max_images=MAX_IMAGES, job_form=job_form, job_error=job_error,
    )  # fmt: skip


@router.post("/gallery/train")
@allow("editor")
def submit_generate_job(
    p: P,
    who: Caller,
    request: Request,
    dataset: FormText = "",
    model: FormText = "",
    rows: FormText = "",
    epochs: FormText = "",
    latent: FormText = "",
    register_as: FormText = "",
    cpus: FormText = "",
    memory_mb: FormText = "",
) -> Response:
    """Submit a ``generate`` job from the form (the same typed spec as the API)."""
    job_form = {"dataset": dataset, "model": model, "rows": rows, "epochs": epochs,
                "latent": latent, "register": register_as, "cpus": cpus,
                "memory_mb": memory_mb}  # fmt: skip
    try:
        given = {
            "dataset": dataset.strip() or None, "model": model.strip() or None,
            "rows": optional_int(rows, "training images"), "epochs": optional_int(epochs, "epochs"),
            "latent": optional_int(latent, "code size"), "register": register_as.strip() or None,
        }  # fmt: skip
        job = submit_job_form(p, who, GenerateJob, given, cpus=cpus, memory_mb=memory_mb)
    except ValidationError as exc:
        return _job_page(p, request, job_form, form_problems(exc))
    except LeptonError as exc:
        return _job_page(p, request, job_form, exc.message)
    return redirect(f"/jobs/{job.id}")
