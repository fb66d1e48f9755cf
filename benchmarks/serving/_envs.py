"""One virtual environment per serving anchor, under the ignored ``.venvs/`` folder.

Each anchor gets its own venv so that their pins (fastapi, pydantic, grpc...) never clash
with each other or with Lepton's. Torch goes in first, from the local CPU wheel, so the
anchor's resolver keeps it instead of pulling a CUDA build. A stamp file (the ``pip
freeze`` of the finished install) marks a venv as complete; it is written last, so an
interrupted install is redone on the next run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
TORCH = "torch==2.13.0"
STAMP = "lepton-bench-stamp.json"


@dataclass(frozen=True)
class Anchor:
    """A serving framework to compare against: its venv name and what pip installs."""

    name: str
    requirements: tuple[str, ...]
    main_package: str  # whose version the report shows


ANCHORS: dict[str, Anchor] = {
    a.name: a
    for a in (
        Anchor("fastapi", ("fastapi", "uvicorn[standard]"), "fastapi"),
        Anchor("litserve", ("litserve",), "litserve"),
        Anchor("bentoml", ("bentoml",), "bentoml"),
        Anchor("ray", ("ray[serve]",), "ray"),
    )
}


@dataclass(frozen=True)
class InstalledEnv:
    """A finished venv: its interpreter and what the install recorded."""

    anchor: str
    python: Path
    version: str  # of the anchor's main package
    torch: str
    size_mb: float  # the whole venv
    torch_mb: float  # of which the torch package
    install_s: float  # as recorded when the venv was built


def venv_dir(anchor: str) -> Path:
    return VENVS / anchor


def _pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "-qq", *args]
    print(f"  $ {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True)


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out)}


def _size_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 1e6


def _create(anchor: Anchor) -> None:
    """Builds the venv from scratch and stamps it with its packages and install time."""
    root = venv_dir(anchor.name)
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    print(f"installing {anchor.name} into {root.relative_to(HERE.parents[1])}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    _pip(python, TORCH)
    # Re-stating torch's pin keeps the anchor's resolver from replacing it; numpy spares
    # torch's "Failed to initialize NumPy" warning. (The weights come from a seed, not a file.)
    _pip(python, TORCH, "numpy", *anchor.requirements)
    elapsed = time.perf_counter() - start
    stamp = {"install_s": round(elapsed, 1), "packages": _freeze(python)}
    (root / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True))


def ensure(name: str, reinstall: bool = False) -> InstalledEnv:
    """Returns the anchor's venv, installing it first unless its stamp is already there."""
    anchor = ANCHORS[name]
    root = venv_dir(name)
    stamp_path = root / STAMP
    if reinstall or not stamp_path.exists():
        _create(anchor)
    stamp = json.loads(stamp_path.read_text())
    packages: dict[str, str] = stamp["packages"]
    return InstalledEnv(
        anchor=name,
        python=root / "bin" / "python",
        version=packages.get(anchor.main_package, "?"),
        torch=packages.get("torch", "?"),
        size_mb=round(_size_mb(root), 1),
        torch_mb=round(sum(_size_mb(p) for p in root.glob("lib/python*/site-packages/torch")), 1),
        install_s=stamp["install_s"],
    )
