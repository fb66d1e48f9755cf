"""How a recipe registers what it trained: the registry sits above every recipe in the
layers, so a recipe takes a ``registrar`` (:func:`lepton.registry.register`) as an argument,
refuses ``register=`` without one before any work (:func:`require_registrar`) and registers
through it when asked (:func:`register_when_asked`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from lepton.errors import ConfigError
from lepton.storage import Database

__all__ = ["Registered", "Registrar", "register_when_asked", "require_registrar"]


class Registered(Protocol):
    """What a registrar returns (:class:`lepton.registry.ModelVersion` is one)."""

    @property
    def ref(self) -> str:
        """``"name:version"``."""
        ...


class Registrar(Protocol):
    """Registers a trained model: :func:`lepton.registry.register` is one."""

    def __call__(
        self,
        model: nn.Module,
        name: str,
        *,
        metrics: dict[str, float] | None = None,
        dataset: Any | None = None,
        run: Any | None = None,
        database: Database | None = None,
    ) -> Registered:
        """Register ``model`` as the next version of ``name``."""
        ...


def require_registrar(config: Any, registrar: Callable[..., Any] | None) -> None:
    """Refuse, before any work is done, a recipe config whose ``register_as`` is set with no
    ``registrar`` to register through (recipes sit below the registry, so it is passed in).

    Raises:
        ConfigError: ``config.register_as`` is set and ``registrar`` is ``None``.
    """
    if config.register_as is not None and registrar is None:
        raise ConfigError(
            f"register={config.register_as!r} needs a registrar: pass "
            f"registrar=lepton.registry.register, or leave register unset"
        )


def register_when_asked(
    config: Any,
    registrar: Callable[..., Any] | None,
    model: Any,
    *,
    say: Callable[[str], None],
    **details: Any,
) -> str | None:
    """Register ``model`` as ``config.register_as`` through ``registrar`` when the config
    asks, tell ``say`` and return the version's reference (``"name:1"``); ``None`` when it
    does not ask. ``details`` go to the registrar: ``metrics``, ``dataset``, ``run``,
    ``database``, ``description``.
    """
    if config.register_as is None or registrar is None:
        return None
    ref = str(registrar(model, config.register_as, **details).ref)
    say(f"registered as {ref}")
    return ref
