"""A package that is also its main function: ``lp.tune(...)`` and ``lp.explain(...)``
call the function, while ``from lepton.tune import Float`` imports from the package."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["make_callable"]


def make_callable(package: str, fn: Callable[..., Any]) -> None:
    """Make the imported package ``package`` callable as ``fn``.

    Example:
        >>> make_callable(__name__, tune)  # doctest: +SKIP
    """

    class _CallablePackage(types.ModuleType):
        __doc__ = sys.modules[package].__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    sys.modules[package].__class__ = _CallablePackage
