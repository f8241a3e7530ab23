"""SQLAlchemy 2.0 typed ORM models: the tables of DESIGN section 4 plus the CONTRACTS.md extras.

Shared by the API and the worker. Status-like columns are plain strings holding the values of the
`StrEnum`s below (no native DB enums: migrations stay simple on SQLite and PostgreSQL).
IDs are strings: a short prefix plus a uuid4 hex (`new_id("req")` -> `req_3f2a...`).
"""

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values; we re-attach UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigIntegerPK = BigInteger().with_variant(Integer, "sqlite")
"""64-bit autoincrement key; INTEGER on SQLite, where only that type aliases the rowid."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Split(StrEnum):
    train = "train"
    val = "val"
    test = "test"


class ModelStatus(StrEnum):
    training = "training"
    ready = "ready"
    failed = "failed"


class RequestStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    audit_failed = "audit_failed"
    """Ran, but its audit never passed the acceptance policy (no retrain allowed): no certificate."""


FINISHED_REQUEST_STATUSES = frozenset(
    {RequestStatus.succeeded, RequestStatus.failed, RequestStatus.cancelled, RequestStatus.audit_failed}
)
ACTIVE_REQUEST_STATUSES = frozenset({RequestStatus.queued, RequestStatus.running})


class RequestKind(StrEnum):
    samples = "samples"
    class_ = "class"


class VersionState(StrEnum):
    """Derived from the retirement columns of `model_versions`."""

    live = "live"
    retired = "retired"
    purged = "purged"


class JobKind(StrEnum):
    unlearn = "unlearn"
    train = "train"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    format: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str | None] = mapped_column(String(1000))
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    """Of an s3:// dataset's objects, recorded at registration (core.storage.mirror); None for local ones."""
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    num_classes: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[Any]] = mapped_column(default=list)
    split_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sample(Base):
    """One row per sample; bulk-loaded when a dataset is registered."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "sample_id"),
        Index("ix_samples_dataset_split", "dataset_id", "split"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    sample_id: Mapped[str] = mapped_column(String(512))
    label: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(8))


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    # use_alter breaks the models <-> model_versions cycle; set it only after the version row is flushed
    # (core.lifecycle.version_created does that).
    head_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", use_alter=True, name="fk_models_head_version_id_model_versions")
    )
    status: Mapped[str] = mapped_column(String(16))  # set by core.lifecycle.model_created
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    train_params: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    """Immutable once written. `job_id` is unique so a duplicate job delivery cannot add a second version."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ver"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    number: Mapped[int] = mapped_column(Integer)
    method: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint_uri: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    forgotten_count: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column()
    """Set when a later version forgot samples this one still holds: it is no longer served."""
    retired_by: Mapped[str | None] = mapped_column(String(40))
    """The version whose commit retired this one."""
    purge_after: Mapped[datetime | None] = mapped_column(index=True)
    purged_at: Mapped[datetime | None] = mapped_column()
    """When the checkpoint file was deleted from storage."""

    @property
    def state(self) -> VersionState:
        if self.purged_at is not None:
            return VersionState.purged
        return VersionState.retired if self.retired_at is not None else VersionState.live


class Job(Base):
    """One unit of worker work on a model. The DB, not the broker, is the source of truth for its state.

    At most one `running` job per model (partial unique index). The requests a job serves point at it
    through `deletion_requests.job_id`; `request_ids` keeps the list it claimed, for the record.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_one_running_per_model",
            "model_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.unlearn)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    retry_at: Mapped[datetime | None] = mapped_column()
    """When a job `queued` for another attempt is due (set with its backoff)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    request_ids: Mapped[list[Any]] = mapped_column(default=list)
    stage: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class ForgottenSample(Base):
    """A tombstone: this sample is never again retain data for this model."""

    __tablename__ = "forgotten_samples"
    __table_args__ = (UniqueConstraint("model_id", "sample_id"),)

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    sample_id: Mapped[str] = mapped_column(String(512))
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"), index=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"
    __table_args__ = (
        UniqueConstraint("model_id", "idempotency_key"),
        Index("ix_deletion_requests_status", "status"),
        Index("ix_deletion_requests_external_ref", "external_ref"),
        Index("ix_deletion_requests_model_status", "model_id", "status"),
        Index("ix_deletion_requests_due_at", "due_at"),
        Index("ix_deletion_requests_idempotency_key", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("req"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    external_ref: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    sample_ids: Mapped[list[Any] | None] = mapped_column(JSON())
    forget_class: Mapped[int | None] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(64), default="dau")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.queued)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    result_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    api_key_id: Mapped[str | None] = mapped_column(String(40))


class AuditReport(Base):
    __tablename__ = "audit_reports"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rpt"))
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"), unique=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    report: Mapped[dict[str, Any]] = mapped_column()
    html_uri: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only, hash-chained log. Append only through `core.db.audit.append_audit_event`.

    `hash = sha256(prev_hash || canonical JSON of the row)`; `prev_hash` is unique, so the chain
    cannot fork even if two writers race (the second insert fails).
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    event: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(40), index=True)
    model_id: Mapped[str | None] = mapped_column(String(40), index=True)
    version_id: Mapped[str | None] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class PendingItem(Base):
    """What an active (queued or running) deletion request holds on its model: one row per sample id
    (`kind` "s") or its class (`kind` "c", `item` the class index). The primary key makes "already pending
    elsewhere" an indexed lookup of just the posted ids, and refuses a concurrent duplicate.

    Written by the API with the request; removed by the database itself when the request leaves the
    active statuses (trigger `trg_deletion_requests_release_pending`, migration 0005) or is deleted.
    """

    __tablename__ = "pending_items"

    model_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    item: Mapped[str] = mapped_column(String(512), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )


PENDING_SAMPLE = "s"
PENDING_CLASS = "c"


class DeletionBatch(Base):
    """A batch of deletion requests posted under an Idempotency-Key: its body hash and the outcome of
    each item (`{"status": 202, "id": ...}` or `{"status": 4xx, "problem": {...}}`), replayed as a whole."""

    __tablename__ = "deletion_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("bat"))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    results: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class CallbackDelivery(Base):
    """One status-change callback owed to a request's `callback_url`: the outbox of `core.callbacks`.

    Written in the transaction that changes the request's status (none when it rolls back), delivered at
    least once by the workers, always with the same `delivery_id` (the `X-Unlearn-Delivery` header), and
    in `id` order per request. `body` is the exact JSON sent (the resource when the status changed);
    `next_attempt_at` is when a worker may try (again), also set ahead while an attempt is in flight."""

    __tablename__ = "callback_outbox"
    __table_args__ = (
        Index("ix_callback_outbox_status_due", "status", "next_attempt_at"),
        Index("ix_callback_outbox_request_order", "request_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(40), unique=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class AuditCheckpoint(Base):
    """A signed head of the audit chain (`core.db.checkpoints`): the event id and hash at `signed_at`,
    and the detached Ed25519 signature (`core.evidence`) over that document."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ckp"))
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("audit_events.id"), index=True)
    event_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(String(16))  # certificate | schedule
    kid: Mapped[str] = mapped_column(String(64))
    signature: Mapped[dict[str, Any]] = mapped_column()


class ApiKey(Base):
    """API keys are stored only as sha256 of the plaintext; `prefix` lets a human tell them apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
