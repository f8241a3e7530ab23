"""jobs.retry_at: when a job queued for a retry is due (heartbeat_at no longer doubles as that clock).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    # A job already waiting for a retry keeps the clock it had.
    op.execute("UPDATE jobs SET retry_at = heartbeat_at WHERE status = 'queued' AND attempts > 0")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_at")
