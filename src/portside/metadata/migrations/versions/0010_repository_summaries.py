"""What the web UI lists, kept where a page can read it at any size: each repository's size (the
bytes of the blobs linked to it, each once), last push and newest description, kept by triggers
on the tables they summarize, with indexes to page through them in order; the web UI's login
sessions; a record of each garbage collection run.

Triggers rather than code on the request path: every writer of links, manifests and tags (pushes,
mounts, the cache, garbage collection, the bench's bulk fill) keeps the summary without knowing
it. On PostgreSQL they are deferred to the commit: the summary row is then locked after every
other lock the transaction takes, so a push and a collection in one repository cannot wait for
each other in a cycle. SQLite runs one writer at a time and updates it at once.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

# The statements below are made of these constants only: no input reaches them (hence the S608s).
NEWEST_DESCRIPTION = """(SELECT m.description FROM manifests m
    WHERE m.repository_id = {repository} AND m.description IS NOT NULL
    ORDER BY m.created_at DESC, m.digest DESC LIMIT 1)"""
MANIFEST_PUSHED = (
    "UPDATE repositories SET pushed_at = CASE WHEN pushed_at IS NULL OR pushed_at < "
    "NEW.created_at THEN NEW.created_at ELSE pushed_at END, description = CASE WHEN "
    "NEW.description IS NULL THEN description ELSE {newest} END WHERE id = NEW.repository_id"
)
LINKED_SIZE = "COALESCE((SELECT b.size FROM blobs b WHERE b.digest = {digest}), 0)"

# name → (table, event, the UPDATE of repositories it makes for each row)
TRIGGERS = {
    "linked": (
        "repository_blobs",
        "INSERT",
        "UPDATE repositories SET size = size + {size} WHERE id = NEW.repository_id".format(  # noqa: S608
            size=LINKED_SIZE.format(digest="NEW.digest")
        ),
    ),
    "unlinked": (
        "repository_blobs",
        "DELETE",
        "UPDATE repositories SET size = size - {size} WHERE id = OLD.repository_id".format(  # noqa: S608
            size=LINKED_SIZE.format(digest="OLD.digest")
        ),
    ),
    "manifest_pushed": (
        "manifests",
        "INSERT",
        MANIFEST_PUSHED.format(newest=NEWEST_DESCRIPTION.format(repository="NEW.repository_id")),
    ),
    "manifest_deleted": (
        "manifests",
        "DELETE",
        "UPDATE repositories SET description = {newest} WHERE id = OLD.repository_id".format(  # noqa: S608
            newest=NEWEST_DESCRIPTION.format(repository="OLD.repository_id")
        ),
    ),
    "tag_set": (
        "tags",
        "INSERT",
        "UPDATE repositories SET pushed_at = CASE WHEN pushed_at IS NULL OR pushed_at < "
        "NEW.updated_at THEN NEW.updated_at ELSE pushed_at END WHERE id = NEW.repository_id",
    ),
    "tag_moved": (
        "tags",
        "UPDATE OF digest, updated_at",  # not a pull's time (0011): no write per pull
        "UPDATE repositories SET pushed_at = CASE WHEN pushed_at IS NULL OR pushed_at < "
        "NEW.updated_at THEN NEW.updated_at ELSE pushed_at END WHERE id = NEW.repository_id",
    ),
}


def _create_triggers(dialect: str) -> None:
    for name, (table, event, update) in TRIGGERS.items():
        trigger = f"tr_summary_{name}"
        if dialect == "postgresql":
            op.execute(
                f"CREATE FUNCTION portside_summary_{name}() RETURNS trigger LANGUAGE plpgsql "
                f"AS $$ BEGIN {update}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE CONSTRAINT TRIGGER {trigger} AFTER {event} ON {table} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                f"EXECUTE FUNCTION portside_summary_{name}()"
            )
        else:
            op.execute(f"CREATE TRIGGER {trigger} AFTER {event} ON {table} BEGIN {update}; END")


def _backfill() -> None:
    op.execute(
        "UPDATE repositories SET size = COALESCE((SELECT sum(b.size) FROM repository_blobs l "  # noqa: S608
        "JOIN blobs b ON b.digest = l.digest WHERE l.repository_id = repositories.id), 0), "
        "pushed_at = (SELECT max(m.created_at) FROM manifests m "
        "WHERE m.repository_id = repositories.id), "
        "description = " + NEWEST_DESCRIPTION.format(repository="repositories.id")
    )
    op.execute(
        "UPDATE repositories SET pushed_at = (SELECT max(t.updated_at) FROM tags t "
        "WHERE t.repository_id = repositories.id) WHERE pushed_at IS NULL OR pushed_at < "
        "(SELECT max(t.updated_at) FROM tags t WHERE t.repository_id = repositories.id)"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("repositories") as batch:
        batch.add_column(sa.Column("size", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("pushed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("description", sa.Text))
    op.create_index("ix_repositories_pushed", "repositories", ["pushed_at", "id"])
    op.create_index("ix_repositories_size", "repositories", ["size", "id"])
    _backfill()
    _create_triggers(dialect)

    op.create_table(
        "ui_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ui_sessions_expires", "ui_sessions", ["expires_at"])
    op.create_index("ix_ui_sessions_username", "ui_sessions", ["username"])

    op.create_table(
        "gc_runs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("bytes_freed", sa.BigInteger, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_table("gc_runs")
    op.drop_index("ix_ui_sessions_username", table_name="ui_sessions")
    op.drop_index("ix_ui_sessions_expires", table_name="ui_sessions")
    op.drop_table("ui_sessions")
    for name, (table, *_) in TRIGGERS.items():
        on = f" ON {table}" if dialect == "postgresql" else ""
        op.execute(f"DROP TRIGGER tr_summary_{name}{on}")
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION portside_summary_{name}()")
    op.drop_index("ix_repositories_size", table_name="repositories")
    op.drop_index("ix_repositories_pushed", table_name="repositories")
    with op.batch_alter_table("repositories") as batch:
        batch.drop_column("description")
        batch.drop_column("pushed_at")
        batch.drop_column("size")
