"""The Vision page: pick a registered object detector, upload an image (or make a digit
scene from test-split MNIST digits), and see the boxes it finds drawn on the image.

Answers come from the very :class:`~lepton.serve._vision.DetectionService` a deployment
of the version runs (same resizing, same thresholds), loaded in the platform's process
and kept for a few versions (:class:`~lepton.platform.web._loaded.Loaded`). The boxes are
drawn on the server with Pillow into a PNG that the page shows as a ``data:`` image (the
CSP allows ``img-src data:``): no script, no ``style=``. The page also submits a
``detect`` job (the same typed spec as the API).
"""

from __future__ import annotations

import base64
import threading
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from lepton import registry
from lepton.errors import LeptonError, NotFoundError, RequestError
from lepton.platform._deps import Caller, P
from lepton.platform._http import allow
from lepton.platform._state import Platform
from lepton.platform.jobs._specs import DetectJob
from lepton.platform.web._explain import MAX_UPLOAD
from lepton.platform.web._loaded import Loaded, versions_of
from lepton.platform.web._render import (
    FormText,
    form_problems,
    job_form_defaults,
    number,
    optional_int,
    redirect,
    submit_job_form,
)
from lepton.platform.web._render import render as render_page
from lepton.serve._types import Image
from lepton.serve._vision import (
    DETECTOR_ARCHITECTURES,
    DetectionService,
    draw_detections,
    is_detector,
)
from lepton.storage import Database

__all__ = ["detector_versions", "router"]

router = APIRouter(include_in_schema=False)
Ref = Annotated[str, Query(max_length=200)]
_detect_lock = threading.Lock()  # one detection at a time in the server process


def _detection_service(ref: str, database: Database) -> DetectionService:
    return DetectionService(ref, database=database)


_service: Loaded[DetectionService] = Loaded(_detection_service)


def detector_versions(database: Database) -> list[registry.ModelVersion]:
    """Every ready object-detector version, newest first."""
    return versions_of(database, DETECTOR_ARCHITECTURES)


def _job_defaults() -> dict[str, str]:
    """The job form's first values: the recipe's own defaults."""
    return job_form_defaults(
        DetectJob, ("dataset", "train_scenes", "epochs", "width", "blocks"), ("register",)
    )


def _page(
    p: Platform, request: Request, *, form: dict[str, str], result: dict[str, Any] | None = None,
    problem: str = "", job_form: dict[str, str] | None = None, job_error: str = "",
) -> Response:  # fmt: skip
    status = 422 if problem or job_error else 200
    return render_page(
        request, "vision.html", section="/vision", status=status,
        versions=detector_versions(p.db), form=form, result=result, problem=problem,
        job_form=job_form or _job_defaults(), job_error=job_error,
        datasets=("mnist", "fashion-mnist"),
    )  # fmt: skip


def _version(p: Platform, ref: str) -> registry.ModelVersion:
    found = registry.resolve(ref, database=p.db)
    if not is_detector(found.manifest):
        name = (found.manifest.get("architecture") or {}).get("name", "?")
        raise NotFoundError(
            f"{found.ref} is not an object detector (its architecture is {name}); pick one "
            f"on /vision, or train one with `lepton vision detect train --register NAME`"
        )
    return found


def _threshold(text: str) -> float | None:
    if not text.strip():
        return None
    value = number(text, "score threshold")
    if not 0 <= value <= 1:
        raise RequestError(f"the score threshold is a number in [0, 1], got {text.strip()}")
    return value


def _detect(
    p: Platform, ref: str, picture: Image, threshold: float | None, truth: list[str] | None
) -> dict[str, Any]:
    from lepton.serve._vision import detect_image

    version = _version(p, ref)
    service = _service(version.ref, p.db)
    with _detect_lock:
        answer = detect_image(service.detector, picture, score_threshold=threshold)
    png = draw_detections(picture, answer)
    return {
        "ref": version.ref,
        "answer": answer.model_dump(),
        "rows": list(zip(answer.labels, answer.scores, answer.boxes, strict=True)),
        "image": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "truth": truth,
        "threshold": threshold if threshold is not None else service.detector.model.score_threshold,
    }


def _scene(p: Platform, ref: str, seed: int) -> tuple[Image, list[str]]:
    """A digit scene from test-split digits (the detector never saw them), at its size."""
    from PIL import Image as PILImage

    from lepton.vision import digit_scenes
    from lepton.vision.recipe import scene_options

    version = _version(p, ref)
    size = (version.manifest["architecture"].get("config") or {}).get("input_size") or [64, 64]
    side = int(size[0]) if size[0] == size[1] and int(size[0]) % 4 == 0 else 64
    scene = digit_scenes("test", n=1, seed=seed, **scene_options(side))
    pixels = (scene.images[0, 0] * 255).round().byte().numpy()
    labels = [scene.classes[i] for i in scene.labels[0].tolist()]
    return Image(PILImage.fromarray(pixels, mode="L")), labels


@router.get("/vision")
@allow("viewer")
async def vision(
    p: P,
    request: Request,
    model: Ref = "",
    scene: Annotated[str, Query(max_length=12)] = "",
    score_threshold: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    """The registered detectors; with ``scene=SEED``, a digit scene and the boxes found."""
    form = {"model": model, "scene": scene, "score_threshold": score_threshold}
    result, problem = None, ""
    if scene.strip():
        try:
            seed = optional_int(scene, "scene")
            if seed is None or seed < 0:
                raise RequestError("the scene is a seed: a whole number >= 0, e.g. 7")
            if not model.strip():
                raise RequestError("pick a detector first")
            threshold = _threshold(score_threshold)
            picture, truth = await run_in_threadpool(_scene, p, model.strip(), seed)
            result = await run_in_threadpool(_detect, p, model.strip(), picture, threshold, truth)
        except LeptonError as exc:
            problem = exc.message
    return await run_in_threadpool(_page, p, request, form=form, result=result, problem=problem)


@router.post("/vision")
@allow("viewer", audit=False)
async def detect_upload(
    p: P,
    request: Request,
    image: Annotated[UploadFile | None, File()] = None,
    model: Annotated[str, Form(max_length=200)] = "",
    score_threshold: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Find the objects in an uploaded image with the chosen detector."""
    data = await image.read(MAX_UPLOAD + 1) if image is not None else b""
    form = {"model": model, "scene": "", "score_threshold": score_threshold}
    result, problem = None, ""
    try:
        if not model.strip():
            raise RequestError("pick a detector first")
        if len(data) > MAX_UPLOAD:
            raise RequestError(f"the image is over {MAX_UPLOAD // 2**20} MB; send a smaller one")
        if not data:
            raise RequestError("choose an image file (PNG or JPEG) first")
        threshold = _threshold(score_threshold)
        try:
            picture = Image.from_bytes(data)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        result = await run_in_threadpool(_detect, p, model.strip(), picture, threshold, None)
    except LeptonError as exc:
        problem = exc.message
    return await run_in_threadpool(_page, p, request, form=form, result=result, problem=problem)


@router.post("/vision/train")
@allow("editor")
def submit_detect_job(
    p: P,
    who: Caller,
    request: Request,
    dataset: FormText = "",
    train_scenes: FormText = "",
    epochs: FormText = "",
    width: FormText = "",
    blocks: FormText = "",
    register_as: FormText = "",
    cpus: FormText = "",
    memory_mb: FormText = "",
) -> Response:
    """Submit a ``detect`` job from the form (the same typed spec as the API)."""
    job_form = {"dataset": dataset, "train_scenes": train_scenes, "epochs": epochs,
                "width": width, "blocks": blocks, "register": register_as, "cpus": cpus,
                "memory_mb": memory_mb}  # fmt: skip
    form = {"model": "", "scene": "", "score_threshold": ""}
    try:
        given = {
            "dataset": dataset.strip() or None,
            "train_scenes": optional_int(train_scenes, "training scenes"),
            "epochs": optional_int(epochs, "epochs"), "width": optional_int(width, "width"),
            "blocks": optional_int(blocks, "blocks"), "register": register_as.strip() or None,
        }  # fmt: skip
        job = submit_job_form(p, who, DetectJob, given, cpus=cpus, memory_mb=memory_mb)
    except ValidationError as exc:
        return _page(p, request, form=form, job_form=job_form, job_error=form_problems(exc))
    except LeptonError as exc:
        return _page(p, request, form=form, job_form=job_form, job_error=exc.message)
    return redirect(f"/jobs/{job.id}")
