"""The web dashboard: server-rendered pages by noun, their templates, charts, Markdown and
static files. Pages call the SDK or the platform's services, never the API's routes.
"""

from __future__ import annotations

from lepton.platform.web._pages import install

__all__ = ["install"]
