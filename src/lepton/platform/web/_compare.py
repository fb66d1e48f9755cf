"""A model's versions side by side: format, file size, CPU latency at batch 1 and 64,
test accuracy and lineage (which version each was derived from, and by which recipe),
with the lineage drawn as a tree.

Every figure says where it comes from, and none is estimated:

- size: the bytes of the version's files, from its manifest;
- latency: only from a benchmark run on this server (:func:`~._measure.benchmark`),
  started from this page in a background thread; "not measured" until then;
- accuracy: that benchmark's, else what :mod:`lepton.compress` measured when it
  registered the version (``lineage.figures.accuracy_after``), else the original's
  accuracy that a compress step measured on the very same rows
  (``accuracy_before`` of a version derived from it); training metrics are validation
  figures on other data, so they are not shown as test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from lepton import registry
from lepton.platform._deps import P
from lepton.platform._http import RecordId, allow
from lepton.platform.web import _measure
from lepton.platform.web._render import redirect, render

__all__ = ["Row", "lineage_tree", "router", "rows"]

router = APIRouter(include_in_schema=False)
ModelName = Annotated[str, Path(max_length=100)]


@dataclass
class Row:
    """One version's column of figures, each with where it comes from."""

    version: registry.ModelVersion
    format: str
    size: int
    parameters: int | None
    latency_ms: dict[str, float] | None = None
    latency_note: str = "not measured"
    accuracy: float | None = None
    accuracy_note: str = "not measured"
    derived_from: str | None = None
    step: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    running: bool = False
    failure: str | None = None


def _format(manifest: dict[str, Any]) -> str:
    """``"pytorch fp32"``, ``"onnx int8 (static, qdq)"``, ``"pytorch fp32, pruned 50%"``..."""
    lineage = manifest.get("lineage") or {}
    recipe = lineage.get("recipe") or {}
    step = recipe.get("step") or lineage.get("step")
    if manifest.get("kind") == "onnx":
        method = recipe.get("method") if step == "quantize" else recipe.get("quantize")
        if method:
            fmt = recipe.get("format") or recipe.get("quant_format")
            return f"onnx int8 ({method}{', ' + str(fmt) if fmt and method == 'static' else ''})"
        label = "onnx fp32"
    else:
        label = "pytorch fp32"
    amount = recipe.get("amount") if step == "prune" else recipe.get("prune")
    if amount:
        kind = "channels" if recipe.get("structured", True) else "weights"
        label += f", pruned {100 * float(amount):.0f}% {kind}"
    if step == "distill":
        label += ", distilled"
    return label


def rows(name: str, p: P) -> list[Row]:
    """The comparison of ``name``'s ready versions, oldest first."""
    versions = sorted(registry.list_versions(name, database=p.db), key=lambda v: v.version)
    found: list[Row] = []
    for v in versions:
        lineage = v.manifest.get("lineage") or {}
        files = v.manifest.get("files") or {}
        row = Row(
            version=v,
            format=_format(v.manifest),
            size=sum(int(f.get("size", 0)) for f in files.values()),
            parameters=v.manifest.get("parameters"),
            derived_from=lineage.get("derived_from"),
            step=lineage.get("step"),
            recipe=dict(lineage.get("recipe") or {}),
        )
        row.running, row.failure = _measure.state(v.ref, _measure.BENCHMARK)
        bench = _measure.stored(v, _measure.BENCHMARK)
        if bench is not None:
            row.latency_ms = dict(bench["latency_ms"])
            row.latency_note = (
                f"median of {bench['calls']['1']} / {bench['calls']['64']} calls, "
                f"{bench['threads']} threads, {bench['inputs']}"
            )
            if bench.get("accuracy") is not None:
                row.accuracy = float(bench["accuracy"])
                row.accuracy_note = (
                    f"benchmark: {bench['test_rows']:,} {bench['test_data']} test rows"
                )
        figures = lineage.get("figures") or {}
        if row.accuracy is None and figures.get("accuracy_after") is not None:
            row.accuracy = float(figures["accuracy_after"])
            row.accuracy_note = (
                f"at registration: {figures.get('test_rows', 0):,} "
                f"{figures.get('test_data', '?')} test rows"
            )
        found.append(row)
    by_ref = {r.version.ref: r for r in found}
    for r in found:  # an original measured by the step that derived a version from it
        figures = (r.version.manifest.get("lineage") or {}).get("figures") or {}
        parent = by_ref.get(r.derived_from or "")
        if parent is not None and parent.accuracy is None and "accuracy_before" in figures:
            parent.accuracy = float(figures["accuracy_before"])
            parent.accuracy_note = (
                f"measured when v{r.version.version} was derived: "
                f"{figures.get('test_rows', 0):,} {figures.get('test_data', '?')} test rows"
            )
    return found


def lineage_tree(found: list[Row]) -> list[tuple[int, Row]]:
    """``(depth, row)`` in depth-first order: each version under the one it was derived
    from (versions derived from another model, or from nothing, are roots)."""
    by_ref = {r.version.ref: r for r in found}
    children: dict[str, list[Row]] = {}
    roots: list[Row] = []
    for r in found:
        if r.derived_from in by_ref and r.derived_from != r.version.ref:
            children.setdefault(str(r.derived_from), []).append(r)
        else:
            roots.append(r)
    ordered: list[tuple[int, Row]] = []
    seen: set[str] = set()

    def visit(row: Row, depth: int) -> None:
        if row.version.ref in seen:  # lineage cannot loop, but a page must never hang
            return
        seen.add(row.version.ref)
        ordered.append((depth, row))
        for child in children.get(row.version.ref, []):
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    return ordered


@router.get("/models/{name}/compare")
@allow("viewer")
def compare_versions(p: P, request: Request, name: ModelName) -> Response:
    """A model's versions side by side: size, latency, accuracy, format, lineage."""
    found = rows(name, p)
    if not found:
        registry.resolve(name, database=p.db)  # no such model: its 404 page
    return render(
        request,
        "model_compare.html",
        section="/models",
        name=name,
        rows=found,
        tree=lineage_tree(found),
        batches=[str(b) for b in _measure.BATCHES],
    )


@router.post("/models/{name}/{version}/benchmark")
@allow("editor")
def benchmark_version(p: P, name: ModelName, version: RecordId) -> Response:
    """Measure a version's CPU latency and test accuracy in the background."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    _measure.start(found.ref, _measure.BENCHMARK, database=p.db)
    return redirect(f"/models/{name}/compare")


@router.post("/models/{name}/{version}/importance")
@allow("editor")
def importance_of_version(p: P, name: ModelName, version: RecordId) -> Response:
    """Compute a tabular version's global (permutation) importances in the background."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    _measure.start(found.ref, _measure.IMPORTANCE, database=p.db)
    return redirect(f"/models/{name}/{version}")
