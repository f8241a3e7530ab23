"""The callback outbox: one row per status-change callback owed, written in the transaction of the status
change and delivered by the workers (core.callbacks).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "callback_outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_callback_outbox_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_outbox")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_callback_outbox_delivery_id")),
    )
    with op.batch_alter_table("callback_outbox") as batch:
        batch.create_index("ix_callback_outbox_status_due", ["status", "next_attempt_at"], unique=False)
        batch.create_index("ix_callback_outbox_request_order", ["request_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("callback_outbox") as batch:
        batch.drop_index("ix_callback_outbox_request_order")
        batch.drop_index("ix_callback_outbox_status_due")
    op.drop_table("callback_outbox")
