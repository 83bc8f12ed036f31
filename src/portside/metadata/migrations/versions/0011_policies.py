"""What the registry's policies need kept: when each tag was last pulled (retention's "keep what
was pulled within"), written a batch a second off the pull path; and robot accounts' access
tokens, by the SHA-256 of the secret (never the secret), with their scopes, expiry and last use.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tags") as batch:
        batch.add_column(sa.Column("pulled_at", WHEN))
    op.create_table(
        "robot_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN),
        sa.Column("last_used_at", WHEN),
    )


def downgrade() -> None:
    op.drop_table("robot_tokens")
    # In place, not by a batch's copy of the table: dropping the old table would drop 0010's
    # triggers on it with it (SQLite has had DROP COLUMN since 3.35).
    op.execute("ALTER TABLE tags DROP COLUMN pulled_at")
