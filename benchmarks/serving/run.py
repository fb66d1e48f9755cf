"""Serving benchmark: Lepton's model server vs BentoML, LitServe, Ray Serve and plain FastAPI.

Every server serves the same seeded MLP 784-256-256-10 (POST /predict, one JSON row in,
10 floats out) on 127.0.0.1 with one worker/replica and one torch thread. Each anchor runs
from its own venv under benchmarks/serving/.venvs/ (installed on first use); Lepton runs
from the repo's venv with `lepton serve`. All servers are started once and kept up, their
outputs checked to be equal, then measured one at a time with wrk (the others SIGSTOPped
meanwhile): several concurrency levels, a warm-up before each point, repeats interleaved
round-robin (order rotated each repeat). Reported: successful req/s and p50/p99 latency
(medians over repeats), errors (non-2xx + socket errors), and server CPU time per
successful request (all the server's processes, from /proc). Results go to
benchmarks/serving/results.json.

    .venv/bin/python benchmarks/serving/run.py            # full run (~15 min on 2 cores)
    .venv/bin/python benchmarks/serving/run.py --quick    # smoke run (~3 min after installs)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import _envs
import _load
import _procs
import _report
import _servers
from _servers import RunningServer, ServerSpec

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-5
# The probe row: fixed pixel-like values in [0, 1].
ROW = [round(((i * 37) % 101) / 100, 2) for i in range(784)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = sorted({s.server for s in _servers.SPECS})
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=",".join(names),
        help=f"comma-separated servers or server/variant (default: all of {', '.join(names)})",
    )
    parser.add_argument(
        "--connections", default="16,64", help="wrk concurrency levels (default: 16,64)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per point (10)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per point (3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s points, 1 s warm-up, 1 repeat, 16 connections",
    )
    parser.add_argument(
        "--no-pause",
        dest="pause_idle",
        action="store_false",
        help="keep the servers not being measured running (default: SIGSTOP them, so that "
        "their idle work takes no CPU from the one under load)",
    )
    parser.add_argument("--reinstall", action="store_true", help="rebuild the anchor venvs")
    parser.add_argument(
        "--startup-timeout", type=float, default=180.0, help="seconds a server may take to answer"
    )
    parser.add_argument(
        "--json", type=Path, default=HERE / "results.json", help="where to write results"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeats, args.connections = 2, 1, 1, "16"
    args.levels = [int(c) for c in args.connections.split(",")]
    return args


def select_specs(wanted: str) -> list[ServerSpec]:
    keys = {w.strip() for w in wanted.split(",") if w.strip()}
    specs = [s for s in _servers.SPECS if s.server in keys or s.name in keys]
    known = {s.server for s in _servers.SPECS} | {s.name for s in _servers.SPECS}
    if unknown := keys - known:
        raise SystemExit(f"unknown servers {sorted(unknown)}; choose from {sorted(known)}")
    if any(s.server == "lepton" for s in specs) and not _servers.lepton_available():
        print("! `lepton serve` is not available in .venv yet: skipping Lepton.\n", flush=True)
        specs = [s for s in specs if s.server != "lepton"]
    if not specs:
        raise SystemExit("nothing to benchmark")
    return specs


def prepare_envs(specs: list[ServerSpec], reinstall: bool) -> dict[str, _envs.InstalledEnv]:
    names = sorted({s.env_name for s in specs if s.env_name})
    envs = {name: _envs.ensure(name, reinstall=reinstall) for name in names}
    print("anchor venvs (benchmarks/serving/.venvs/):")
    for e in envs.values():
        print(
            f"  {e.anchor:<9} {e.anchor} {e.version}, torch {e.torch}, "
            f"{e.size_mb:,.0f} MB ({e.torch_mb:,.0f} MB of it torch), "
            f"installed in {e.install_s:.0f} s"
        )
    return envs


def start_all(
    specs: list[ServerSpec], timeout_s: float, running: list[RunningServer]
) -> dict[str, list[float]]:
    """Starts the servers one after another (appending to ``running`` as they start, so the
    caller can stop them whatever happens) and returns each one's answer to the probe row."""
    outputs: dict[str, list[float]] = {}
    for spec in specs:
        start = time.monotonic()
        for attempt in (1, 2):  # the free port can be taken before the server binds it
            server = _servers.start(spec)
            running.append(server)
            try:
                outputs[spec.name] = _servers.wait_ready(server, ROW, timeout_s)
                break
            except RuntimeError as e:
                if attempt == 2 or server.proc.poll() is None:
                    raise
                print(f"  {spec.name:<20} exited while starting ({e}); retrying", flush=True)
                running.remove(server)
        n = len(_procs.server_pids(server.proc.pid))
        print(
            f"  {spec.name:<20} up on :{server.port} in {time.monotonic() - start:4.1f} s "
            f"({n} processes)",
            flush=True,
        )
    return outputs


def check_outputs(outputs: dict[str, list[float]]) -> float:
    """Asserts every server returned the same 10 outputs; returns the largest difference."""
    reference_name, reference = next(iter(outputs.items()))
    worst = 0.0
    for name, out in outputs.items():
        if len(out) != len(reference):
            raise SystemExit(f"{name} returned {len(out)} outputs, expected {len(reference)}")
        diff = max(abs(a - b) for a, b in zip(out, reference, strict=True))
        if not diff <= TOLERANCE:
            raise SystemExit(
                f"{name} disagrees with {reference_name} by {diff:.3g} (> {TOLERANCE}):\n"
                f"  {name}: {out}\n  {reference_name}: {reference}"
            )
        worst = max(worst, diff)
    return worst


def idle_cpu(servers: list[RunningServer], seconds: float = 3.0) -> dict[str, float]:
    """Each server's CPU use while no request arrives, in % of one core."""
    before = {s.spec.name: _procs.server_cpu(s.proc.pid) for s in servers}
    time.sleep(seconds)
    return {
        s.spec.name: round(
            100 * _procs.cpu_delta(before[s.spec.name], _procs.server_cpu(s.proc.pid)) / seconds, 1
        )
        for s in servers
    }


def measure(
    wrk: str, server: RunningServer, script: Path, conns: int, args: argparse.Namespace, repeat: int
) -> _report.Point:
    """Warm-up, then one measured wrk run with the server's CPU time read around it."""
    _load.run_wrk(wrk, server.url, script, conns, args.warmup)
    batches_before = _servers.batch_totals(server)
    before = _procs.server_cpu(server.proc.pid)
    result = _load.run_wrk(wrk, server.url, script, conns, args.duration)
    cpu_s = _procs.cpu_delta(before, _procs.server_cpu(server.proc.pid))
    batches_after = _servers.batch_totals(server)
    return _report.Point(
        server=server.spec.server,
        variant=server.spec.variant,
        connections=conns,
        repeat=repeat,
        ok_per_s=result.ok_per_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        requests=result.requests,
        cpu_ms_per_ok=1e3 * cpu_s / result.ok if result.ok else math.nan,
        mean_batch=_mean_batch(batches_before, batches_after),
    )


def _mean_batch(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def run_matrix(
    wrk: str, servers: list[RunningServer], args: argparse.Namespace
) -> list[_report.Point]:
    """Repeats x levels x servers, the server order rotated by one every repeat."""
    _servers.RUNS.mkdir(parents=True, exist_ok=True)
    scripts = {
        batch_of_one: _load.write_lua(
            _servers.RUNS / f"post-{'batch' if batch_of_one else 'row'}.lua",
            {"inputs": [ROW] if batch_of_one else ROW},
        )
        for batch_of_one in (False, True)
    }
    points: list[_report.Point] = []
    if args.pause_idle:
        for server in servers:
            _procs.pause(server.proc.pid)
    for repeat in range(args.repeats):
        order = servers[repeat % len(servers) :] + servers[: repeat % len(servers)]
        for conns in args.levels:
            for server in order:
                script = scripts[server.spec.batch_of_one]
                _procs.resume(server.proc.pid)
                p = measure(wrk, server, script, conns, args, repeat)
                if args.pause_idle:
                    _procs.pause(server.proc.pid)
                points.append(p)
                print(
                    f"  [repeat {repeat + 1}/{args.repeats}, {conns:>3} conns] {p.name:<20} "
                    f"{p.ok_per_s:8,.0f} req/s  p50 {p.p50_ms:6.1f} ms  p99 {p.p99_ms:6.1f} ms  "
                    f"errors {p.errors:>5}  CPU {p.cpu_ms_per_ok:5.2f} ms/req"
                    + (f"  mean batch {p.mean_batch:.1f}" if p.mean_batch else ""),
                    flush=True,
                )
    return points


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def metadata(
    args: argparse.Namespace, envs: dict[str, _envs.InstalledEnv], wrk: str
) -> dict[str, Any]:
    try:
        lepton_version = importlib.metadata.version("lepton")
    except importlib.metadata.PackageNotFoundError:
        lepton_version = "?"
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "wrk": wrk_version.split(" Copyright")[0].strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "connections": args.levels,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "quick": args.quick,
            "workers_per_server": 1,
            "torch_threads": 1,
            "batch_size": _servers.BATCH_SIZE,
            "max_wait_ms": _servers.MAX_WAIT_MS,
            "wrk_threads": 1,
            "idle_servers_paused": args.pause_idle,
        },
        "versions": {
            "lepton": lepton_version,
            **{n: {k: v for k, v in asdict(e).items() if k != "python"} for n, e in envs.items()},
        },
    }


def main() -> None:
    args = parse_args()
    # Ctrl-C, kill and a closed terminal all end in the `finally` that stops the servers
    # (SIGINT explicitly too: a shell starts background jobs with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    specs = select_specs(args.servers)
    wrk = _load.ensure_wrk()
    envs = prepare_envs(specs, args.reinstall)
    running: list[RunningServer] = []
    try:
        print(f"\nstarting {len(specs)} servers (1 worker/replica each, 1 torch thread):")
        outputs = start_all(specs, args.startup_timeout, running)
        worst = check_outputs(outputs)
        print(f"  outputs equal across all servers (max difference {worst:.2g} <= {TOLERANCE})")
        idle = idle_cpu(running)
        print("  idle CPU, % of a core: " + ", ".join(f"{k} {v}" for k, v in idle.items()))
        print(
            f"\nmeasuring: {args.levels} connections, {args.duration} s per point after "
            f"{args.warmup} s warm-up, {args.repeats} repeat(s), interleaved:",
            flush=True,
        )
        points = run_matrix(wrk, running, args)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the shutdown finish
        if running:
            print(f"stopping {len(running)} servers", flush=True)
        for server in reversed(running):
            _servers.stop(server)

    rows = _report.summarise(points)
    meta = {**metadata(args, envs, wrk), "idle_cpu_percent": idle, "max_output_difference": worst}
    _report.write_json(args.json, meta, points, rows)
    print(
        "\nmedians over repeats; req/s counts 2xx answers; CPU = all server processes' "
        "user+system time per 2xx answer; 1 worker/replica per server\n"
    )
    print(_report.text_tables(rows))
    print()
    print("\n".join(_report.summary_lines(_report.targets(rows))))
    print("\nmarkdown:\n")
    print(_report.markdown_table(rows))
    print(f"\nresults written to {os.path.relpath(args.json)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("\ninterrupted: servers stopped")
