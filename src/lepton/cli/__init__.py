"""The ``lepton`` command line."""

from lepton.cli._app import app, main

__all__ = ["app", "main"]
