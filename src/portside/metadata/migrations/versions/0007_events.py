"""The outbox of notification events: one row per event and endpoint, deleted once delivered.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite's rowid is an INTEGER key


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_outbox_endpoint", "outbox", ["endpoint", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_endpoint", table_name="outbox")
    op.drop_table("outbox")
