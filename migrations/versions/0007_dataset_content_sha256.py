"""datasets.content_sha256: the sha256 of an s3:// dataset's objects, recorded when it is registered, so
each worker checks the local copy it fetches (see core.storage.mirror). Null for local datasets.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("content_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("content_sha256")
