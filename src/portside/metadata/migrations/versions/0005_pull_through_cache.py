"""The pull-through cache's state: which manifests came from an upstream and when each was last
pulled (what garbage collection expires), and when each cached tag was last checked upstream
(what its time to live counts from).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)
DIGEST = sa.String(200)


def upgrade() -> None:
    op.create_table(
        "cached_manifests",
        sa.Column(
            "repository_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("pulled_at", WHEN, nullable=False),
    )
    op.create_index("ix_cached_manifests_pulled", "cached_manifests", ["pulled_at"])
    op.create_table(
        "cached_tags",
        sa.Column(
            "repository_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("checked_at", WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cached_tags")
    op.drop_index("ix_cached_manifests_pulled", table_name="cached_manifests")
    op.drop_table("cached_manifests")
