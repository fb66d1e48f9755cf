"""``lepton env``: versions, devices and paths, for bug reports."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch
import typer
from rich.console import Console
from rich.table import Table

import lepton
from lepton._version import __version__
from lepton.config import get_settings

__all__ = ["collect_env", "env"]

PACKAGES = ("torch", "numpy", "torchmetrics", "safetensors", "scikit-learn", "pydantic", "typer")


def collect_env() -> dict[str, Any]:
    """Everything a bug report needs, as a JSON-safe dict."""
    settings = get_settings()
    versions = {"lepton": __version__, "python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    cuda = torch.cuda.is_available()
    devices = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "cuda_version": torch.version.cuda,
    }
    paths = {
        "LEPTON_HOME": str(settings.home),
        "LEPTON_DATA_DIR": str(settings.data_dir) if settings.data_dir else None,
        "LEPTON_ARTIFACTS": settings.artifacts
        if settings.artifacts and settings.artifacts.startswith("s3://")
        else str(settings.artifacts_dir),
        "lepton_package": os.path.dirname(lepton.__file__),
    }
    return {
        "versions": versions,
        "platform": platform.platform(),
        "devices": devices,
        "paths": paths,
    }


def env(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show versions, devices and paths (paste this into bug reports)."""
    info = collect_env()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, box=None)
    for section in ("versions", "devices", "paths"):
        table.add_row(f"[bold]{section}[/]", "")
        for key, value in info[section].items():
            table.add_row(f"  {key}", str(value))
    table.add_row("[bold]platform[/]", info["platform"])
    Console().print(table)
