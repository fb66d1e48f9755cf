"""The model registry: immutable versions (safetensors + JSON manifest + model card),
stages, aliases, and loading by reference. No pickle is ever loaded.

Example:
    >>> version = lp.register(model, "mnist-convnet", metrics=result.metrics,
    ...                       dataset=train)  # doctest: +SKIP
    >>> lp.registry.set_stage(version.ref, "production")  # doctest: +SKIP
    >>> model = lp.load_model("mnist-convnet@production")  # doctest: +SKIP
"""

from lepton.registry._load import (
    check_not_pickle,
    delete_version,
    list_models,
    list_versions,
    load_model,
    manifest_of,
    model_card_text,
)
from lepton.registry._onnx import OnnxModule, export_onnx, register_onnx
from lepton.registry._queries import versions_by_dataset, versions_in_stage, versions_of_run
from lepton.registry._registry import (
    STAGES,
    ModelVersion,
    reconcile_versions,
    register,
    resolve,
    set_alias,
    set_stage,
)

__all__ = [
    "STAGES",
    "ModelVersion",
    "OnnxModule",
    "check_not_pickle",
    "delete_version",
    "export_onnx",
    "list_models",
    "list_versions",
    "load_model",
    "manifest_of",
    "model_card_text",
    "reconcile_versions",
    "register",
    "register_onnx",
    "resolve",
    "set_alias",
    "set_stage",
    "versions_by_dataset",
    "versions_in_stage",
    "versions_of_run",
]
