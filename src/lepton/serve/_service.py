"""``lp.Service``: a Python class becomes an HTTP service."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from lepton.errors import ConfigError
from lepton.serve._handler import Route, build_route, handler_options
from lepton.serve._hosts import HostPolicy

__all__ = ["Service", "absolute_target", "load_service_class"]


class Service:
    """Base class of a service: ``setup()`` once per replica, then handlers answer.

    Example:
        >>> import lepton as lp
        >>> class Classifier(lp.Service):
        ...     def setup(self) -> None:
        ...         self.model = lp.models.MLP(in_features=4, num_classes=3).eval()
        ...
        ...     @lp.handler(batch_size=32, max_wait_ms=5)
        ...     def predict(self, inputs: list[list[float]]) -> list[int]:
        ...         import torch
        ...         return self.model(torch.tensor(inputs)).argmax(1).tolist()

    Serve it with ``lepton serve app.py:Classifier --replicas 2``, or in-process with
    :meth:`asgi` (any ASGI server, or ``httpx.ASGITransport`` in tests).
    """

    def setup(self) -> None:
        """Load models and other state; runs once in each replica before it serves."""

    def teardown(self) -> None:
        """Release resources; runs once in each replica after it stops serving."""

    @classmethod
    def routes(cls) -> list[Route]:
        """Every ``@lp.handler`` method's route (unbound)."""
        routes: list[Route] = []
        for name, member in inspect.getmembers(cls, predicate=callable):
            options = handler_options(member)
            if options is not None:
                routes.append(build_route(cls, name, member, options))
        if not routes:
            raise ConfigError(f"{cls.__name__} has no handlers; decorate a method with @lp.handler")
        paths = [(r.method, r.path) for r in routes]
        builtin = {"/", "/healthz", "/readyz", "/metrics", "/openapi.json"}
        for route in routes:
            if paths.count((route.method, route.path)) > 1 or route.path in builtin:
                raise ConfigError(f"{cls.__name__}: route {route.path} is taken; pass path=...")
        return routes

    def asgi(
        self, *, token: str | None = None, max_body_bytes: int = 10 * 1024 * 1024,
        hosts: HostPolicy | None = None,
    ) -> Any:  # fmt: skip
        """Run :meth:`setup` and return the ASGI app that serves this instance.

        Args:
            token: The bearer token every route but the probes needs.
            max_body_bytes: Larger request bodies answer 413.
            hosts: The ``Host`` values answered; default: loopback names, any port.
        """
        from lepton.serve._app import ServiceApp

        routes = self.routes()
        self.setup()
        for route in routes:
            route.fn = getattr(self, route.name)
            if route.options.check is not None:
                route.check = getattr(self, route.options.check)
        return ServiceApp(self, routes, token=token, max_body_bytes=max_body_bytes,
                          title=type(self).__name__, hosts=hosts)  # fmt: skip


def _is_file_target(module_name: str) -> bool:
    return module_name.endswith(".py") or "/" in module_name


def absolute_target(target: str) -> str:
    """``"app.py:Class"`` with the file's absolute path (a module target is unchanged)."""
    module_name, sep, class_name = target.rpartition(":")
    if sep and module_name and _is_file_target(module_name):
        return f"{Path(module_name).resolve()}:{class_name}"
    return target


def load_service_class(target: str) -> type[Service]:
    """Import ``"path/to/app.py:ClassName"`` or ``"package.module:ClassName"``.

    Raises:
        ConfigError: The file, module or class is missing, or the class is no Service.
    """
    module_name, sep, class_name = target.rpartition(":")
    if not sep or not module_name or not class_name:
        raise ConfigError(f"{target!r}: name the class as FILE.py:Class or module:Class")
    if _is_file_target(module_name):
        path = Path(module_name).resolve()
        if not path.is_file():
            raise ConfigError(f"{module_name}: no such file")
        spec = importlib.util.spec_from_file_location(f"lepton_user_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{module_name}: cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"{target}: {class_name!r} is not an lp.Service subclass in that module")
    return cls
