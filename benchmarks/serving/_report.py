"""Results: per-point records, medians over repeats, the two targets, tables and JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LEPTON = "lepton"
FLOOR = "fastapi/unbatched"


@dataclass(frozen=True)
class Point:
    """One measurement: one server variant, one concurrency, one repeat."""

    server: str
    variant: str
    connections: int
    repeat: int
    ok_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_ms_per_ok: float  # server CPU (all its processes) per successful request
    mean_batch: float | None = None  # executed batch size, where the server exports it

    @property
    def name(self) -> str:
        return f"{self.server}/{self.variant}"


@dataclass(frozen=True)
class Row:
    """Medians over repeats of one server variant at one concurrency (errors are summed)."""

    server: str
    variant: str
    connections: int
    repeats: int
    ok_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_ok: float
    mean_batch: float | None

    @property
    def name(self) -> str:
        return f"{self.server}/{self.variant}"


def summarise(points: Iterable[Point]) -> list[Row]:
    """One row per (variant, concurrency), in first-seen order."""
    groups: dict[tuple[str, str, int], list[Point]] = {}
    for p in points:
        groups.setdefault((p.server, p.variant, p.connections), []).append(p)
    return [
        Row(
            server=server,
            variant=variant,
            connections=conns,
            repeats=len(ps),
            ok_per_s=statistics.median(p.ok_per_s for p in ps),
            p50_ms=statistics.median(p.p50_ms for p in ps),
            p99_ms=statistics.median(p.p99_ms for p in ps),
            errors=sum(p.errors for p in ps),
            cpu_ms_per_ok=statistics.median(p.cpu_ms_per_ok for p in ps),
            mean_batch=_median_or_none([p.mean_batch for p in ps]),
        )
        for (server, variant, conns), ps in groups.items()
    ]


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    """Per concurrency: Lepton batched vs the best anchor, Lepton unbatched vs FastAPI."""
    out: list[dict[str, Any]] = []
    for conns in sorted({r.connections for r in rows}):
        at = {r.name: r for r in rows if r.connections == conns}
        anchors = [r for r in at.values() if r.server != LEPTON]
        entry: dict[str, Any] = {"connections": conns}
        best = max(anchors, key=lambda r: r.ok_per_s, default=None)
        ours, floor = at.get(f"{LEPTON}/batched"), at.get(FLOOR)
        if ours and best:
            entry["batched_vs_best_anchor"] = {
                "best_anchor": best.name,
                "throughput_ratio": _ratio(ours.ok_per_s, best.ok_per_s),
                "p99_ms": [ours.p99_ms, best.p99_ms],
                "cpu_ms_per_req": [ours.cpu_ms_per_ok, best.cpu_ms_per_ok],
            }
        plain = at.get(f"{LEPTON}/unbatched")
        if plain and floor:
            entry["unbatched_vs_fastapi"] = {
                "throughput_ratio": _ratio(plain.ok_per_s, floor.ok_per_s),
                "p99_ms": [plain.p99_ms, floor.p99_ms],
                "cpu_ms_per_req": [plain.cpu_ms_per_ok, floor.cpu_ms_per_ok],
            }
        out.append(entry)
    return out


HEADERS = ("server", "variant", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/req", "batch")


def _cells(r: Row) -> tuple[str, ...]:
    return (
        r.server,
        r.variant,
        f"{r.ok_per_s:,.0f}",
        f"{r.p50_ms:.1f}",
        f"{r.p99_ms:.1f}",
        str(r.errors),
        f"{r.cpu_ms_per_ok:.2f}",
        f"{r.mean_batch:.1f}" if r.mean_batch is not None else "-",
    )


def _by_level(rows: list[Row]) -> dict[int, list[Row]]:
    levels: dict[int, list[Row]] = {}
    for r in rows:
        levels.setdefault(r.connections, []).append(r)
    return {c: sorted(rs, key=lambda r: -r.ok_per_s) for c, rs in sorted(levels.items())}


def text_tables(rows: list[Row]) -> str:
    """Aligned tables, one per concurrency level, printed side by side."""
    blocks: list[list[str]] = []
    for conns, rs in _by_level(rows).items():
        cells = [HEADERS, *(_cells(r) for r in rs)]
        widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in cells
        ]
        title = f"{conns} connections"
        blocks.append([title.ljust(len(lines[0])), *lines])
    height = max(len(b) for b in blocks)
    padded = [b + [" " * len(b[0])] * (height - len(b)) for b in blocks]
    return "\n".join("    ".join(parts).rstrip() for parts in zip(*padded, strict=True))


def markdown_table(rows: list[Row]) -> str:
    """One markdown table (concurrency as a column) to paste into a README."""
    head = ("connections", *HEADERS)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for conns, rs in _by_level(rows).items():
        lines += ["| " + " | ".join((str(conns), *_cells(r))) + " |" for r in rs]
    return "\n".join(lines)


def summary_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for e in entries:
        conns = e["connections"]
        if b := e.get("batched_vs_best_anchor"):
            ours, theirs = b["p99_ms"]
            lines.append(
                f"{conns} conns: lepton/batched / best anchor ({b['best_anchor']}) = "
                f"{b['throughput_ratio']:.2f}x req/s; p99 {ours:.1f} vs {theirs:.1f} ms; "
                f"CPU {b['cpu_ms_per_req'][0]:.2f} vs {b['cpu_ms_per_req'][1]:.2f} ms/req"
            )
        if u := e.get("unbatched_vs_fastapi"):
            ours, theirs = u["p99_ms"]
            lines.append(
                f"{conns} conns: lepton/unbatched / {FLOOR} = "
                f"{u['throughput_ratio']:.2f}x req/s; p99 {ours:.1f} vs {theirs:.1f} ms; "
                f"CPU {u['cpu_ms_per_req'][0]:.2f} vs {u['cpu_ms_per_req'][1]:.2f} ms/req"
            )
    return lines or ["(no Lepton results: the targets need `lepton serve`)"]


def write_json(path: Path, meta: dict[str, Any], points: list[Point], rows: list[Row]) -> None:
    doc = {
        **meta,
        "rows": [asdict(r) for r in rows],
        "targets": targets(rows),
        "points": [asdict(p) for p in points],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
