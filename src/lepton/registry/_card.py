"""The model card: a human-readable page generated from a version's manifest."""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["model_card"]


def model_card(manifest: dict[str, Any]) -> str:
    """Markdown describing the model, its data, metrics and how to load it."""
    arch = manifest["architecture"]
    lines = [
        f"# {manifest['name']} (version {manifest['version']})",
        "",
        manifest.get("description") or "_No description._",
        "",
        "## Model",
        f"- architecture: `{arch['name']}` with `{arch['config']}`",
        f"- parameters: {manifest['parameters']:,}",
        f"- input: {manifest['input_schema']}",
        f"- output: {manifest['output_schema']}",
        f"- built with lepton {manifest['lepton_version']}, torch {manifest['torch_version']}",
        f"- registered {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Training data",
    ]
    data = manifest.get("dataset")
    if data:
        lines.append(
            f"- `{data['name']}`, {data['rows']:,} rows, fingerprint `{data['fingerprint']}`"
        )
    else:
        lines.append("- not recorded")
    steps = [step.get("op") for step in manifest.get("preprocessing", [])]
    lines.append(f"- preprocessing: {', '.join(map(str, steps)) if steps else 'none'}")
    derived = (manifest.get("lineage") or {}).get("derived_from")
    if derived:
        recipe = manifest["lineage"].get("recipe")
        lines.append(f"- derived from `{derived}`" + (f" by `{recipe}`" if recipe else ""))
    if manifest.get("run_id") is not None:
        lines.append(
            f"- produced by run {manifest['run_id']} (`lepton runs show {manifest['run_id']}`)"
        )
    lines += ["", "## Metrics", ""]
    metrics = manifest.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    else:
        lines.append("_None recorded._")
    lines += [
        "",
        "## Use",
        "```python",
        "import lepton as lp",
        f'model = lp.load_model("{manifest["name"]}:{manifest["version"]}")',
        "```",
        "",
        "## Files",
    ]
    lines += [
        f"- `{f}`: sha256 `{meta['sha256']}`, {meta['size']:,} bytes"
        for f, meta in manifest["files"].items()
    ]
    return "\n".join(lines) + "\n"
