"""Indexes that keep a listing's page at the same cost whatever the registry's size:

- on PostgreSQL, repository and tag names in code-point order (COLLATE "C"), which the catalog
  and tag pages sort and compare by: the unique indexes are in the database's collation, often a
  linguistic one, which cannot serve them, so each page sorted every name;
- the manifests that have a description, newest first: search shows each repository's newest
  description, which otherwise walked every manifest of a repository without one.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('CREATE INDEX ix_repositories_name_c ON repositories (name COLLATE "C")')
        op.execute('CREATE INDEX ix_tags_name_c ON tags (repository_id, name COLLATE "C")')
    op.create_index(
        "ix_manifests_described",
        "manifests",
        ["repository_id", "created_at", "digest"],
        postgresql_where=sa.text("description IS NOT NULL"),
        sqlite_where=sa.text("description IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_manifests_described", table_name="manifests")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_tags_name_c", table_name="tags")
        op.drop_index("ix_repositories_name_c", table_name="repositories")
