"""Lepton's version, in a module that imports nothing.

Inside the package read it from here (``from lepton._version import __version__``):
``import lepton`` would load the facade, and with it training, for one string.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"  # pyproject.toml reads it from here (dynamic version)
