"""Typed settings, read from ``LEPTON_*`` environment variables.

Settings are read anew by :func:`get_settings` on each call, so tests and long-lived
processes see changes to the environment without a restart.

Example:
    >>> import os
    >>> from lepton.config import get_settings
    >>> get_settings().home.name != ""
    True
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Lepton's settings.

    Attributes:
        home: Where Lepton keeps its state (``LEPTON_HOME``, default ``~/.lepton``).
        data_dir: An extra folder searched first for dataset files (``LEPTON_DATA_DIR``).
        num_threads: Torch intra-op threads for training (``LEPTON_NUM_THREADS``); ``0``
            leaves torch's default.
        artifacts: Where artifacts (model files, run artifacts) go (``LEPTON_ARTIFACTS``):
            a folder, or ``s3://bucket/prefix`` for S3-compatible storage (endpoint and
            credentials from the standard ``AWS_*`` variables); default:
            ``home/artifacts``.
        encryption_key: Base64 (URL-safe) of 32 random bytes; artifacts are then
            encrypted at rest with AES-256-GCM (``LEPTON_ENCRYPTION_KEY``).
        encryption_key_file: A file holding such a key (``LEPTON_ENCRYPTION_KEY_FILE``).
        database_url: SQLAlchemy URL of the metadata database (``LEPTON_DATABASE_URL``);
            default: SQLite at ``home/lepton.db``.
        max_queued_jobs_per_user: The most jobs one user may have waiting to start on the
            platform server (``LEPTON_MAX_QUEUED_JOBS_PER_USER``); more are refused (429).
        max_queued_jobs: The most jobs waiting to start on the server, all users together
            (``LEPTON_MAX_QUEUED_JOBS``).
    """

    model_config = SettingsConfigDict(env_prefix="LEPTON_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".lepton")
    data_dir: Path | None = None
    num_threads: int = Field(default=0, ge=0)
    artifacts: str | None = None
    encryption_key: SecretStr | None = None
    encryption_key_file: Path | None = None
    database_url: SecretStr | None = None
    max_queued_jobs_per_user: int = Field(default=100, ge=1)
    max_queued_jobs: int = Field(default=1000, ge=1)

    @field_validator("home", "data_dir", "encryption_key_file", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    def ensure_home(self) -> Path:
        """Create the home if missing, and make it private (``0700``), whatever the umask.

        It holds the metadata database, model weights, job logs and tokens.
        """
        from lepton._fs import private_dir

        return private_dir(self.home)

    @property
    def checkpoints_dir(self) -> Path:
        """Default folder for training checkpoints."""
        return self.home / "checkpoints"

    @property
    def artifacts_dir(self) -> Path:
        """Folder of the local artifact store (``LEPTON_ARTIFACTS`` when it is a folder)."""
        if self.artifacts and not self.artifacts.startswith("s3://"):
            return Path(self.artifacts).expanduser()
        return self.home / "artifacts"


def get_settings() -> Settings:
    """Read the settings from the environment.

    Raises:
        ConfigError: A ``LEPTON_*`` variable has an invalid value.
    """
    from pydantic import ValidationError

    from lepton.errors import ConfigError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"LEPTON_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid Lepton settings ({problems}); fix or unset them") from None
