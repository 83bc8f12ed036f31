"""Manifest descriptions, so that /v1/search is a query: each manifest's description (its
`org.opencontainers.image.description` annotation, else its config's label of that name), and an
index to find a repository's newest manifest.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Manifests pushed before this revision get no description until a newer one is pushed.
    with op.batch_alter_table("manifests") as batch:
        batch.add_column(sa.Column("description", sa.Text))
    op.create_index("ix_manifests_created", "manifests", ["repository_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_manifests_created", table_name="manifests")
    with op.batch_alter_table("manifests") as batch:
        batch.drop_column("description")
