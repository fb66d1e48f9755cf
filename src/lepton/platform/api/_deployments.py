"""``/api/v1/deployments``: serve a registered version, scale, stop, start, delete, release
another version (at once, or as a canary on a share of the traffic), set its autoscaling
policy, read its live figures, and forward predictions and explanations to it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from lepton.errors import DeploymentError
from lepton.platform._deps import Caller, P
from lepton.platform._http import Page, PageQuery, allow
from lepton.platform._state import Platform
from lepton.platform.deployments._autoscale import (
    AutoscalePolicy,
    AutoscaleRequest,
    AutoscaleStatus,
)
from lepton.platform.deployments._canary import Canary, CanaryRequest, ReleaseRequest
from lepton.platform.deployments._specs import (
    MAX_REPLICAS,
    NAME,
    DeploymentRequest,
    DeploymentView,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
DeploymentName = Annotated[str, Path(pattern=f"^{NAME.pattern}$")]


@router.post("/deployments", tags=["deployments"], status_code=201)
@allow("editor")
def create_deployment(p: P, who: Caller, body: DeploymentRequest) -> DeploymentView:
    """Serve a registered version (the reference is pinned to its version number)."""
    return p.deployments.create(body, who.name)


@router.get("/deployments", tags=["deployments"])
@allow("viewer")
def deployments(p: P, paging: PageQuery) -> Page[DeploymentView]:
    """Deployments, by name."""
    return Page.of(p.deployments.list(paging.offset, paging.limit), paging)


@router.get("/deployments/{name}", tags=["deployments"])
@allow("viewer")
def deployment(p: P, name: DeploymentName) -> DeploymentView:
    """One deployment: its version, replicas, port, state and restarts."""
    return p.deployments.get(name)


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=1, le=MAX_REPLICAS)


@router.patch("/deployments/{name}", tags=["deployments"])
@allow("editor")
def scale_deployment(p: P, who: Caller, name: DeploymentName, body: Scale) -> DeploymentView:
    """Change the number of replicas."""
    return p.deployments.scale(name, body.replicas, who.name)


@router.post("/deployments/{name}/stop", tags=["deployments"])
@allow("editor")
def stop_deployment(p: P, who: Caller, name: DeploymentName) -> DeploymentView:
    """Stop serving (requests in flight finish first)."""
    return p.deployments.stop(name, who.name)


@router.post("/deployments/{name}/start", tags=["deployments"])
@allow("editor")
def start_deployment(p: P, who: Caller, name: DeploymentName) -> DeploymentView:
    """Serve a stopped deployment again."""
    return p.deployments.start(name, who.name)


@router.delete("/deployments/{name}", tags=["deployments"])
@allow("editor")
def delete_deployment(p: P, who: Caller, name: DeploymentName) -> DeploymentView:
    """Stop a deployment and forget it; answers its last record."""
    last = p.deployments.get(name)
    p.deployments.delete(name, who.name)
    return last


@router.get("/deployments/{name}/metrics", tags=["deployments"])
@allow("viewer")
def deployment_metrics(p: P, name: DeploymentName) -> dict[str, Any]:
    """Live figures: requests, errors, req/s, latency percentiles, and recent samples."""
    return p.deployments.metrics(name)


@router.get("/deployments/{name}/autoscale", tags=["deployments"])
@allow("viewer")
def autoscale_policy(p: P, name: DeploymentName) -> AutoscaleStatus:
    """Its autoscaling policy, and in ``live`` what the autoscaler sees now: the figure,
    since when it has been above ``high`` or below ``low``, the cool-down left and the last
    change; 404 ``no_autoscale_policy`` when it is not autoscaled."""
    return p.deployments.aiops.autoscaler.status(name)


@router.put("/deployments/{name}/autoscale", tags=["deployments"])
@allow("editor")
def set_autoscale_policy(p: P, name: DeploymentName, body: AutoscaleRequest) -> AutoscalePolicy:
    """Scale it between ``min_replicas`` and ``max_replicas`` on ``metric`` from now on
    (replacing its policy, if any); every change the autoscaler makes is audited."""
    if body.deployment not in (None, name):
        raise DeploymentError(
            f"the body names deployment {body.deployment!r} but the path names {name!r}; "
            f"leave `deployment` out of the body or make them the same"
        )
    policy = AutoscalePolicy.model_validate({**body.model_dump(), "deployment": name})
    return p.deployments.aiops.autoscaler.set_policy(policy)


@router.delete("/deployments/{name}/autoscale", tags=["deployments"])
@allow("editor")
def delete_autoscale_policy(p: P, name: DeploymentName) -> AutoscalePolicy:
    """Stop autoscaling it (its replicas stay as they are); answers the policy removed."""
    return p.deployments.aiops.autoscaler.delete_policy(name)


@router.post("/deployments/{name}/release", tags=["deployments"])
@allow("editor")
def release(p: P, who: Caller, name: DeploymentName, body: ReleaseRequest) -> DeploymentView:
    """Serve another version of its model on every replica now (they restart); a
    ``rollback`` rule with ``within_s`` may undo it. For a share of the traffic first,
    start a canary instead."""
    return p.deployments.healer.release(name, body.model, who.name)


@router.post("/deployments/{name}/canary", tags=["deployments"], status_code=201)
@allow("editor")
def start_canary(p: P, who: Caller, name: DeploymentName, body: CanaryRequest) -> Canary:
    """Serve another version on a ``share`` of the traffic, as deployment ``NAME-canary``:
    the rules naming this deployment also judge the canary on its own figures; a firing
    ``rollback`` rule stops it, and ``promote_after_s`` without an alert promotes it."""
    return p.deployments.canaries.start(
        name, body.model, share=body.share, promote_after_s=body.promote_after_s, user=who.name
    )


@router.get("/deployments/{name}/canary", tags=["deployments"])
@allow("viewer")
def canary(p: P, name: DeploymentName) -> Canary:
    """Its canary: version, share, when it is promoted, both versions' figures; 404 when
    it has none."""
    return p.deployments.canaries.get(name)


@router.post("/deployments/{name}/canary/promote", tags=["deployments"])
@allow("editor")
def promote_canary(p: P, who: Caller, name: DeploymentName) -> DeploymentView:
    """Promote its canary now: the deployment restarts on the canary's version while the
    canary takes all the traffic, then the canary is deleted."""
    return p.deployments.canaries.promote(name, who.name)


@router.delete("/deployments/{name}/canary", tags=["deployments"])
@allow("editor")
def abort_canary(p: P, who: Caller, name: DeploymentName) -> Canary:
    """Stop and delete its canary (the deployment serves all the traffic, as it never
    stopped); answers the canary's last record."""
    return p.deployments.canaries.abort(name, who.name)


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
    }
}


async def _forward(p: Platform, name: str, request: Request, route: str) -> Response:
    """Send the request's body, as it came, to the deployment's own ``route``."""
    body = await request.body()
    content_type = request.headers.get("content-type", "application/json")
    status, media_type, answer = await p.deployments.predict(name, body, content_type, route=route)
    return Response(answer, status, media_type=media_type)


async def _forward_stream(p: Platform, name: str, request: Request, route: str) -> Response:
    """As :func:`_forward`, passing a streamed answer (NDJSON) on chunk by chunk."""
    body = await request.body()
    content_type = request.headers.get("content-type", "application/json")
    status, media_type, answer = await p.deployments.predict_stream(
        name, body, content_type, route=route
    )
    if isinstance(answer, bytes):
        return Response(answer, status, media_type=media_type)
    return StreamingResponse(answer, status, media_type=media_type,
                             headers={"cache-control": "no-cache"})  # fmt: skip


@router.post("/deployments/{name}/predict", tags=["deployments"], openapi_extra=_BODY)
@allow("viewer", audit=False)
async def predict(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward a prediction to the deployment: the same body its own ``/predict`` takes
    (``{"inputs": ...}``, an image, or a multipart upload)."""
    return await _forward(p, name, request, "predict")


@router.post("/deployments/{name}/explain", tags=["deployments"], openapi_extra=_BODY)
@allow("viewer", audit=False)
async def explain(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward an explanation to the deployment: its own ``/explain`` body (``/predict``'s
    plus ``method``, ``target`` and ``plot``); the same rules and errors as ``predict``."""
    return await _forward(p, name, request, "explain")


@router.post("/deployments/{name}/recommend", tags=["deployments"])
@allow("viewer", audit=False)
async def recommend(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to a recommender deployment's ``/recommend``: ``{"user": ..., "k": 10,
    "exclude_seen": true, "filter": {"genres": [...]}}``; the same rules and errors as
    ``predict``."""
    return await _forward(p, name, request, "recommend")


@router.post("/deployments/{name}/similar", tags=["deployments"])
@allow("viewer", audit=False)
async def similar(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to a recommender deployment's ``/similar``: ``{"item": ..., "k": 10}``; the
    same rules and errors as ``predict``."""
    return await _forward(p, name, request, "similar")


@router.post("/deployments/{name}/predict_link", tags=["deployments"])
@allow("viewer", audit=False)
async def predict_link(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to a graph-embedding deployment's ``/predict_link``: ``{"head": ...,
    "relation": ..., "k": 10, "exclude_known": false}``; the same rules and errors as
    ``predict``."""
    return await _forward(p, name, request, "predict_link")


@router.post("/deployments/{name}/query", tags=["deployments"])
@allow("viewer", audit=False)
async def sparql_query(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward a read-only SPARQL query to a graph-embedding deployment's ``/query``:
    ``{"query": "SELECT ...", "timeout_s": 5, "max_rows": 1000}``. The deployment refuses
    updates and ``SERVICE`` and enforces its own time and row limits; the same rules and
    errors as ``predict``."""
    return await _forward(p, name, request, "query")


@router.post("/deployments/{name}/detect", tags=["deployments"], openapi_extra=_BODY)
@allow("viewer", audit=False)
async def detect(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to an object-detector deployment's ``/detect``: ``{"image": "<base64>",
    "score_threshold": 0.3, "max_detections": 100}`` (or an upload, or a raw image); boxes
    come back in the sent image's pixels. The same rules and errors as ``predict``."""
    return await _forward(p, name, request, "detect")


@router.post("/deployments/{name}/sample", tags=["deployments"])
@allow("viewer", audit=False)
async def image_sample(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to an image-generator deployment's ``/sample``: ``{"n": 4, "label": 3,
    "steps": 25, "guidance": 2.0, "seed": 0}``; the images come back as base64 PNGs. The
    same rules and errors as ``predict``."""
    return await _forward(p, name, request, "sample")


@router.post("/deployments/{name}/search", tags=["deployments"])
@allow("viewer", audit=False)
async def text_search(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to a text-index deployment's ``/search``: ``{"query": "...", "k": 10,
    "filter": {"pos": "n"}}``; the same rules and errors as ``predict``."""
    return await _forward(p, name, request, "search")


@router.post("/deployments/{name}/chat", tags=["deployments"])
@allow("viewer", audit=False)
async def text_chat(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to a text-assistant deployment's ``/chat``: ``{"message": "...", "history":
    [{"role": "user", "content": "..."}, ...]}``; the answer is streamed as NDJSON lines,
    passed on as they come. The same rules and errors as ``predict``."""
    return await _forward_stream(p, name, request, "chat")


@router.post("/deployments/{name}/generate", tags=["deployments"])
@allow("viewer", audit=False)
async def text_generate(p: P, name: DeploymentName, request: Request) -> Response:
    """Forward to a language-model (GPT) deployment's ``/generate``: ``{"prompt": "...",
    "max_new_tokens": 200, "temperature": 0.8, "top_k": 20, "top_p": 0.95, "seed": 0}``;
    the continuation is streamed as NDJSON lines, passed on as they come. The same rules
    and errors as ``predict``."""
    return await _forward_stream(p, name, request, "generate")
