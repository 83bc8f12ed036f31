"""Garbage collection: blob states and marks, blob reservations, leases.

Every blob recorded before this revision is `stored`: its bytes were in place before its row.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DIGEST = sa.String(200)
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="stored"))
        batch.add_column(sa.Column("marked_at", WHEN))
        batch.add_column(sa.Column("marked_by", sa.String(64)))
    op.create_table(
        "blob_reservations",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
    )
    op.create_index("ix_blob_reservations_digest", "blob_reservations", ["digest"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("blob_reservations")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("marked_by")
        batch.drop_column("marked_at")
        batch.drop_column("state")
