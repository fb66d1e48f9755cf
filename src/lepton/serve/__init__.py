"""Serving: a Python class becomes an HTTP service; a registered model, one command.

``Service`` + ``handler`` define the API, ``serve`` runs replicas, ``Client`` calls it.
"""

from lepton.serve._client import Client
from lepton.serve._handler import HandlerOptions, Route, handler
from lepton.serve._model import ModelInput, ModelService
from lepton.serve._service import Service, load_service_class
from lepton.serve._supervisor import ServeOptions, Supervisor, is_loopback
from lepton.serve._types import Image, Prediction, Tensor

__all__ = [
    "Client",
    "HandlerOptions",
    "Image",
    "ModelInput",
    "ModelService",
    "Prediction",
    "Route",
    "ServeOptions",
    "Service",
    "Supervisor",
    "Tensor",
    "handler",
    "is_loopback",
    "load_service_class",
    "serve",
]


def serve(options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT with ``options.replicas`` replicas; the exit status."""
    return Supervisor(options).run()
