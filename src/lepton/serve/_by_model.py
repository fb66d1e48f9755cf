"""Which service serves a registered version: a table from its architecture's name.

A version's manifest names its architecture (``"recommender-mf"``, ``"kg-embedding"``,
...). A solution package whose models need routes of their own (``/recommend``,
``/predict_link``, ...) adds one row here, ``name -> "module:Class"``; everything else is a
:class:`~lepton.serve.ModelService`. The module is imported only when a version of that
architecture is served, so serving an MNIST ConvNet never imports pyoxigraph.
"""

from __future__ import annotations

import importlib
from typing import Any

from lepton.serve._service import Service
from lepton.storage import Database

__all__ = ["SERVICES", "architecture_name", "service_for_model"]

SERVICES: dict[str, str] = {
    "recommender-mf": "lepton.serve._recommend:RecommenderService",
    "kg-embedding": "lepton.serve._graph:GraphService",
    "gpt": "lepton.serve._generate:GenerateService",
    "text-classifier": "lepton.serve._text:TextClassifierService",
    "text-tfidf": "lepton.serve._text:TextClassifierService",
    "text-index": "lepton.serve._text:IndexService",
    "text-assistant": "lepton.serve._text:AssistantService",
    "vision-centernet": "lepton.serve._vision:DetectionService",
    "image-diffusion": "lepton.serve._generate_image:GeneratorService",
    "image-vae": "lepton.serve._generate_image:GeneratorService",
}


def architecture_name(manifest: dict[str, Any]) -> str | None:
    """The architecture name a version's manifest records, if any."""
    architecture = manifest.get("architecture")
    name = architecture.get("name") if isinstance(architecture, dict) else None
    return name if isinstance(name, str) else None


def service_for_model(ref: str, *, database: Database | None = None) -> Service:
    """The service for registered version ``ref``: its architecture's row in
    :data:`SERVICES`, else a :class:`~lepton.serve.ModelService`."""
    from lepton.registry import resolve

    target = SERVICES.get(architecture_name(resolve(ref, database=database).manifest) or "")
    if target is None:
        from lepton.serve._model import ModelService

        return ModelService(ref, database=database)
    module, _, name = target.partition(":")
    service: Service = getattr(importlib.import_module(module), name)(ref, database=database)
    return service
