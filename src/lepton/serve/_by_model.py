"""Which service serves a registered version: a table from its architecture's name.

A version's manifest names its architecture (``"recommender-mf"``, ``"kg-embedding"``,
...). A solution package whose models need routes of their own (``/recommend``,
``/predict_link``, ...) adds one row here (:class:`Served`: the service class, its route,
the dashboard page that tries it); everything else is a
:class:`~lepton.serve.ModelService`. The module is imported only when a version of that
architecture is served, so serving an MNIST ConvNet never imports pyoxigraph.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from lepton.serve._service import Service
from lepton.storage import Database

__all__ = ["SERVICES", "Served", "architecture_name", "service_for_model"]


class Served(NamedTuple):
    """How versions of one architecture are served: ``service`` (``"module:Class"``), the
    ``route`` that answers them (beside ``/info`` and the probes), and the dashboard
    ``page`` that tries them (``None``: none; the deployment page then names the route)."""

    service: str
    route: str
    page: str | None = None


SERVICES: dict[str, Served] = {
    "recommender-mf": Served("lepton.serve._recommend:RecommenderService", "/recommend",
                             "/recommend"),
    "kg-embedding": Served("lepton.serve._graph:GraphService", "/predict_link", "/graph"),
    "gpt": Served("lepton.serve._generate:GenerateService", "/generate"),
    "text-classifier": Served("lepton.serve._text:TextClassifierService", "/predict", "/text"),
    "text-tfidf": Served("lepton.serve._text:TextClassifierService", "/predict", "/text"),
    "text-index": Served("lepton.serve._text:IndexService", "/search", "/text"),
    "text-assistant": Served("lepton.serve._text:AssistantService", "/chat", "/text"),
    "vision-centernet": Served("lepton.serve._vision:DetectionService", "/detect", "/vision"),
    "image-diffusion": Served("lepton.serve._generate_image:GeneratorService", "/sample",
                              "/gallery"),
    "image-vae": Served("lepton.serve._generate_image:GeneratorService", "/sample", "/gallery"),
}  # fmt: skip


def architecture_name(manifest: dict[str, Any]) -> str | None:
    """The architecture name a version's manifest records, if any."""
    architecture = manifest.get("architecture")
    name = architecture.get("name") if isinstance(architecture, dict) else None
    return name if isinstance(name, str) else None


def service_for_model(ref: str, *, database: Database | None = None) -> Service:
    """The service for registered version ``ref``: its architecture's row in
    :data:`SERVICES`, else a :class:`~lepton.serve.ModelService`."""
    from lepton.registry import resolve

    served = SERVICES.get(architecture_name(resolve(ref, database=database).manifest) or "")
    if served is None:
        from lepton.serve._model import ModelService

        return ModelService(ref, database=database)
    module, _, name = served.service.partition(":")
    service: Service = getattr(importlib.import_module(module), name)(ref, database=database)
    return service
