"""The REST API under ``/api/v1``: one router per noun (health, datasets, runs, studies, models,
jobs, deployments, privacy budgets; users, tokens and the audit log). Routes validate with
pydantic models, call the SDK or the platform's services (never a database table), and
declare who may call them (``allow``/``public``).
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Mount every API router (and the dashboard's login link) on ``app``."""
    from lepton.platform.api import (
        _alerts,
        _datasets,
        _deployments,
        _graphs,
        _jobs,
        _models,
        _privacy,
        _runs,
        _server,
        _studies,
        _users,
    )

    for module in (
        _server,
        _datasets,
        _runs,
        _studies,
        _models,
        _jobs,
        _deployments,
        _graphs,
        _alerts,
        _privacy,
        _users,
    ):
        app.include_router(module.router)
    app.include_router(_users.login_router)
