"""The model card: a human-readable page generated from a version's manifest."""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["importance_section", "model_card"]


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
    lines += _privacy_lines(manifest.get("privacy"))
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


def importance_section(importance: dict[str, Any], k: int = 10) -> str:
    """Markdown of global feature importances (a ``FeatureImportance.summary()`` record,
    with ``test_data``/``test_rows`` when known), appended to a card when they are
    measured after registration (a version's card file is immutable, like the version)."""
    features = list(importance.get("features") or [])[:k]
    data = importance.get("test_data")
    on = f" on {importance.get('test_rows', 0):,} `{data}` test rows" if data else ""
    lines = [
        "## Global feature importance",
        "",
        f"Drop of {importance.get('metric', 'the metric')} (from "
        f"{float(importance.get('baseline_score', float('nan'))):.4f}) when one feature is "
        f"shuffled{on}, mean ± std over {importance.get('n_repeats', '?')} shuffles "
        f"(permutation importance).",
        "",
        "| feature | importance | std |",
        "|---|---|---|",
    ]
    lines += [
        f"| {f['name']} | {float(f['importance']):.4f} | {float(f['std']):.4f} |" for f in features
    ]
    return "\n".join(lines) + "\n"


def _privacy_lines(privacy: dict[str, Any] | None) -> list[str]:
    """The DP-SGD guarantee of the training run, when it had one."""
    if not privacy:
        return []
    lines = [
        "",
        "## Privacy",
        f"- trained with differential privacy (DP-SGD): epsilon = {privacy['epsilon']:.3g}, "
        f"delta = {privacy['delta']:g}, for adding or removing one training row",
        f"- accountant: {privacy.get('accountant', 'unknown')}",
        f"- clipping: each sample's gradient to L2 norm {privacy.get('max_grad_norm', '?')}"
        f", noise multiplier {privacy.get('noise_multiplier', float('nan')):.3g}, "
        f"sample rate {privacy.get('sample_rate', float('nan')):.3g}, "
        f"{privacy.get('steps', '?')} steps",
    ]
    if privacy.get("ledger"):
        lines.append(f"- charged to the privacy budget of `{privacy['ledger']}`")
    if privacy.get("private") is False:
        lines.append("- **seeded run (noise reproducible): for tests, not private**")
    return lines
