"""A trigram index over repositories' names and descriptions, so that a search finds the
repositories holding a substring without reading every repository:

- SQLite: an FTS5 table with the trigram tokenizer (SQLite 3.34+), external content over
  repositories keyed by their id, kept by triggers on repositories (0010's triggers keep
  repositories.description, so a new or deleted manifest reaches it through them);
- PostgreSQL: pg_trgm's GIN indexes on name and description, which serve `column ILIKE '%q%'`
  (SQLAlchemy's case-insensitive contains there); pg_trgm is a trusted extension since
  PostgreSQL 13: the database's owner may create it, or an operator does, in any schema.

Trigrams cannot index queries shorter than three characters; those walk names in order.

A batch migration that rebuilds repositories on SQLite (copy and rename) drops the triggers on
it: such a migration must create them again.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# An external-content table's row is removed by handing FTS5 the values it indexed.
INDEXED = (
    "INSERT INTO repository_search(rowid, name, description) "
    "VALUES (NEW.id, NEW.name, NEW.description)"
)
REMOVED = (
    "INSERT INTO repository_search(repository_search, rowid, name, description) "
    "VALUES ('delete', OLD.id, OLD.name, OLD.description)"
)
# name → (event, condition, statements); every push rewrites description with itself (0010's
# manifest_pushed), which the condition keeps out of the index.
SQLITE_TRIGGERS = {
    "inserted": ("INSERT", "", [INDEXED]),
    "deleted": ("DELETE", "", [REMOVED]),
    "changed": (
        "UPDATE OF name, description",
        "WHEN OLD.name IS NOT NEW.name OR OLD.description IS NOT NEW.description",
        [REMOVED, INDEXED],
    ),
}
POSTGRES_INDEXES = {
    "ix_repositories_name_trgm": "name",
    "ix_repositories_description_trgm": "description",
}


def _trigram_schema() -> str:
    """The schema holding pg_trgm, which is made in public when the database has none: made in
    the migration's own schema, dropping that schema would take the extension, and every other
    schema's trigram indexes, with it."""
    bind = op.get_bind()
    found = bind.scalar(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
    )
    if found is None:
        op.execute("CREATE EXTENSION pg_trgm SCHEMA public")
        return "public"
    return str(found)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        schema = _trigram_schema()
        for index, expression in POSTGRES_INDEXES.items():
            operators = f'"{schema}".gin_trgm_ops'
            op.execute(f"CREATE INDEX {index} ON repositories USING gin ({expression} {operators})")
        return
    op.execute(
        "CREATE VIRTUAL TABLE repository_search USING fts5(name, description, "
        "content='repositories', content_rowid='id', tokenize='trigram')"
    )
    op.execute("INSERT INTO repository_search(repository_search) VALUES ('rebuild')")
    for name, (event, condition, statements) in SQLITE_TRIGGERS.items():
        body = "".join(f"{statement}; " for statement in statements)
        op.execute(
            f"CREATE TRIGGER tr_search_{name} AFTER {event} ON repositories "
            f"FOR EACH ROW {condition} BEGIN {body}END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in POSTGRES_INDEXES:
            op.execute(f"DROP INDEX {index}")
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER tr_search_{name}")
    op.execute("DROP TABLE repository_search")
