"""The Explain panel of a version's page: upload an image or type a row, see the
prediction beside the attribution heatmap (or the feature bars).

It runs in the platform's process on the registered version, through the very
:class:`~lepton.serve.ModelService` a deployment runs (the version's recorded
preprocessing, its image decoding and resizing, its ``/explain`` answer), rather than
through a deployment's ``/explain``: a version can be explained before (or without) being
deployed, the page needs no deployment token or proxy hop, and the answer is the same
code's. The price is the platform's CPU, so it is bounded: small uploads, one row of
at most :data:`MAX_VALUES` numbers, a few services kept loaded (``Loaded``), and
one explanation at a time (a lock), since Captum's methods run many forward passes.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from lepton import registry
from lepton.errors import LeptonError, RequestError
from lepton.platform._deps import P
from lepton.platform._http import RecordId, allow
from lepton.platform.web._loaded import Loaded
from lepton.storage import Database

__all__ = ["MAX_UPLOAD", "MAX_VALUES", "explain_input", "router"]

router = APIRouter(include_in_schema=False)
ModelName = Annotated[str, Path(max_length=100)]
MAX_UPLOAD = 4 * 1024 * 1024  # bytes of an uploaded image
MAX_VALUES = 4096  # numbers in a typed row
_explain_lock = threading.Lock()


def _model_service(ref: str, database: Database) -> Any:
    from lepton.serve import ModelService

    return ModelService(ref, database=database)


_service: Loaded[Any] = Loaded(_model_service)  # the loaded ModelService of a version


def _row(text: str) -> list[float]:
    parts = [t for t in text.replace(",", " ").replace(";", " ").split() if t]
    if not parts:
        raise RequestError("type the row's numbers, separated by commas or spaces")
    if len(parts) > MAX_VALUES:
        raise RequestError(f"a row of {len(parts)} numbers is over {MAX_VALUES}; send fewer")
    try:
        return [float(t) for t in parts]
    except ValueError as exc:
        raise RequestError(f"the row must hold numbers only ({exc})") from None


def _feature_names(version: registry.ModelVersion, width: int, database: Database) -> list[str]:
    """The recorded feature names, else those of the version's catalog dataset when it
    has exactly ``width`` columns, else ``feature 0``, ``feature 1``, ..."""
    from lepton.data import load
    from lepton.platform.web._measure import dataset_of

    recorded = version.manifest.get("input_schema", {}).get("feature_names")
    if recorded and len(recorded) == width:
        return [str(n) for n in recorded]
    data = dataset_of(version, database=database)
    if data:
        try:
            names = load(data, split="test").feature_names
        except LeptonError:
            names = None
        if names is not None and len(names) == width:
            return [str(n) for n in names]
    return [f"feature {i}" for i in range(width)]


def explain_input(
    ref: str,
    *,
    database: Database,
    image: bytes | None = None,
    row: str = "",
    method: str = "integrated_gradients",
    target: str = "",
) -> dict[str, Any]:
    """Explain one image (PNG or JPEG bytes) or one typed row on version ``ref``.

    Returns:
        ``prediction`` (label, score, probabilities), ``png`` (base64 heatmap or feature
        bars), ``method``, ``target``, ``convergence_delta`` and, for a row, ``features``
        (``(name, attribution)`` by decreasing magnitude, at most 10).

    Raises:
        LeptonError: A bad input, method or target (the message says which), or a
            version that cannot be loaded.
    """
    from lepton.serve._explain_route import ExplainRequest
    from lepton.serve._types import Image

    service = _service(ref, database)
    try:
        request = ExplainRequest(
            image=Image.from_bytes(image) if image else None,
            inputs=_row(row) if not image else None,  # type: ignore[arg-type]
            method=method,
            target=target.strip() or None,
            plot=True,
        )
    except (ValidationError, ValueError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else None
        message = "; ".join(str(e["msg"]) for e in errors) if errors else str(exc)
        raise RequestError(message.removeprefix("Value error, ")) from None
    with _explain_lock:
        answer = service.explain(request)
    found: dict[str, Any] = answer.model_dump()
    if not image:
        names = _feature_names(service.version, len(found["attributions"]), database)
        values = [float(v) for v in found["attributions"]]
        ranked = sorted(zip(names, values, strict=False), key=lambda nv: -abs(nv[1]))
        found["features"] = [(str(n), v) for n, v in ranked[:10]]
    return found


@router.post("/models/{name}/{version}/explain")
@allow("viewer", audit=False)
async def explain_version(
    p: P,
    request: Request,
    name: ModelName,
    version: RecordId,
    image: Annotated[UploadFile | None, File()] = None,
    row: Annotated[str, Form(max_length=100_000)] = "",
    method: Annotated[str, Form(max_length=40)] = "integrated_gradients",
    target: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Explain an uploaded image or a typed row, and show it on the version's page."""
    from lepton.platform.web._models import version_page

    data = await image.read(MAX_UPLOAD + 1) if image is not None else b""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    answer: dict[str, Any] | None = None
    problem = ""
    if len(data) > MAX_UPLOAD:
        problem = f"the image is over {MAX_UPLOAD // 2**20} MB; send a smaller one"
    elif not data and not row.strip():
        problem = "choose an image file (PNG or JPEG) or type a row of numbers first"
    else:
        try:
            answer = await run_in_threadpool(
                explain_input, found.ref, database=p.db, image=data or None, row=row,
                method=method, target=target,
            )  # fmt: skip
        except LeptonError as exc:
            problem = exc.message
    return await run_in_threadpool(
        version_page, p, request, name, version,
        explained=answer, explain_error=problem, explain_form={"row": row, "method": method,
                                                               "target": target},
    )  # fmt: skip
