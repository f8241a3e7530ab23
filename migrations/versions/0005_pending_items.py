"""The write path under load: pending_items (what active deletion requests hold, one row per sample id or
class, removed by a trigger when the request leaves queued/running), deletion_batches (batch answers
replayed under an Idempotency-Key) and an index on deletion_requests.idempotency_key.

The trigger lives on deletion_requests: on SQLite a batch migration that recreates that table drops it,
so such a migration must create it again (`create_release_trigger`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = ("queued", "running")
TRIGGER = "trg_deletion_requests_release_pending"
FUNCTION = "release_pending_items"


def create_release_trigger() -> None:
    """Delete a request's pending_items when its status leaves queued/running, in the same statement's
    transaction (whoever makes the change: core.lifecycle, a test, an operator)."""
    active = ", ".join(f"'{status}'" for status in ACTIVE)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM pending_items WHERE request_id = NEW.id;
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON deletion_requests
            FOR EACH ROW WHEN (NEW.status NOT IN ({active}))
            EXECUTE FUNCTION {FUNCTION}()
            """
        )
    else:
        op.execute(
            f"""
            CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON deletion_requests
            FOR EACH ROW WHEN NEW.status NOT IN ({active})
            BEGIN
                DELETE FROM pending_items WHERE request_id = NEW.id;
            END
            """
        )


def drop_release_trigger() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON deletion_requests")
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")


def _backfill_pending_items() -> None:
    """The pending rows of the requests already active (the first one wins where two overlap)."""
    bind = op.get_bind()
    requests = sa.table(
        "deletion_requests",
        sa.column("id", sa.String),
        sa.column("model_id", sa.String),
        sa.column("kind", sa.String),
        sa.column("sample_ids", sa.JSON),
        sa.column("forget_class", sa.Integer),
        sa.column("status", sa.String),
        sa.column("received_at", sa.DateTime),
    )
    pending = sa.table(
        "pending_items",
        sa.column("model_id", sa.String),
        sa.column("kind", sa.String),
        sa.column("item", sa.String),
        sa.column("request_id", sa.String),
    )
    rows: dict[tuple[str, str, str], str] = {}
    active = bind.execute(
        sa.select(requests).where(requests.c.status.in_(ACTIVE)).order_by(requests.c.received_at)
    )
    for request in active:
        if request.kind == "class":
            keys = [(request.model_id, "c", str(request.forget_class))]
        else:
            keys = [(request.model_id, "s", str(sample_id)) for sample_id in request.sample_ids or []]
        for key in keys:
            rows.setdefault(key, request.id)
    if rows:
        values = [
            {"model_id": m, "kind": k, "item": i, "request_id": r} for (m, k, i), r in sorted(rows.items())
        ]
        for start in range(0, len(values), 5000):
            bind.execute(pending.insert(), values[start : start + 5000])


def upgrade() -> None:
    op.create_table(
        "pending_items",
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("item", sa.String(length=512), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_pending_items_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "kind", "item", name=op.f("pk_pending_items")),
    )
    with op.batch_alter_table("pending_items") as batch:
        batch.create_index(batch.f("ix_pending_items_request_id"), ["request_id"], unique=False)
    op.create_table(
        "deletion_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deletion_batches")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_deletion_batches_idempotency_key")),
    )
    with op.batch_alter_table("deletion_requests") as batch:
        batch.create_index("ix_deletion_requests_idempotency_key", ["idempotency_key"], unique=False)
    _backfill_pending_items()
    create_release_trigger()


def downgrade() -> None:
    drop_release_trigger()
    with op.batch_alter_table("deletion_requests") as batch:
        batch.drop_index("ix_deletion_requests_idempotency_key")
    op.drop_table("deletion_batches")
    with op.batch_alter_table("pending_items") as batch:
        batch.drop_index(batch.f("ix_pending_items_request_id"))
    op.drop_table("pending_items")
