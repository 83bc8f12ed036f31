"""The audit log: who did what, when and from where; pruned after `audit.retention`.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite's rowid is an INTEGER key
DIGEST = sa.String(200)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text),
        sa.Column("address", sa.String(255)),
        sa.Column("repository", sa.String(255)),
        sa.Column("digest", DIGEST),
        sa.Column("tag", sa.String(128)),
        sa.Column("previous", DIGEST),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
