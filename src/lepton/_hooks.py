"""Defaults that a lower layer calls but a higher layer provides, meeting at the bottom.

``lp.data.register`` needs a store (``lepton.storage``) and ``lp.data.diff`` a drift
comparison (``lepton.monitor``); the data layer cannot import either. ``import lepton``
puts both factories here without importing the data layer (so ``import lepton`` stays
torch-free), and :mod:`lepton.data._versions` reads them when it is called.

Example:
    >>> "store" in DEFAULTS  # after `import lepton`
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULTS"]

DEFAULTS: dict[str, Callable[..., Any]] = {}
