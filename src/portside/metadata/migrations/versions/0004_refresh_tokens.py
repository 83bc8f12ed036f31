"""Refresh tokens of the built-in token service, shared by every instance and worker (they were
a JSON file per machine): the SHA-256 of each token, its user and service, when it was issued,
expires and was last used.

Tokens in the old file are not carried over: their holders log in again once.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("issued_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN),
        sa.Column("last_used_at", WHEN),
    )
    op.create_index("ix_refresh_tokens_username", "refresh_tokens", ["username"])
    op.create_index("ix_refresh_tokens_expires", "refresh_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_expires", table_name="refresh_tokens")
    op.drop_index("ix_refresh_tokens_username", table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
