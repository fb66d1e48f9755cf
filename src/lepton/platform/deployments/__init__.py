"""Deployments the platform keeps served: the manager, its process control, the predict
proxy and the live metrics scraped from each replica. Never imports the API or the
dashboard.
"""

from __future__ import annotations

from lepton.platform.deployments._manager import DeploymentManager

__all__ = ["DeploymentManager"]
