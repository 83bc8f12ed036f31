"""A count of the blobs that collectors have forgotten (their rows deleted once their bytes were),
in one row (none until the first forget: 0), so that a writer holding a blob's bytes in memory
can record them without a reservation's transaction: it reads the count before it writes the
bytes, and its record fails if a blob was forgotten meanwhile (registry/ingest.py, base.py
Unreserved).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_forgets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("forgotten", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blob_forgets")
