"""Each namespace's usage kept as counters, so that the web UI's usage page and a quota read one
row rather than every link of the namespace: its bytes (each blob once, however many of its
repositories link it), its repositories holding a manifest, its tags. A refcount per namespace
and blob (how many of its repositories link the blob) says when a blob starts or stops counting,
and a count of each repository's manifests when the repository does.

A namespace is what registry/quotas.py's namespace_of says: the first component of a repository
name, "" for a name of one component (NAMESPACE below, the one SQL form of it).

Kept by triggers on repository_blobs, manifests and tags, as 0010 keeps repositories.size: every
writer (pushes, mounts, the pull-through cache, garbage collection, the bench's bulk fill) keeps
them without knowing. Unlike 0010's, they run at once on PostgreSQL, not at the commit: they read
the repository's name, which a repository's deletion has taken away by then. Each first locks the
namespace's row, then changes the refcounts: every change to a namespace's counters runs one at a
time, in that order, so that a refcount read after the lock is exact. A manifest PUT under a quota
takes the same lock first (metadata/manifests.py), checks the counters after its own writes and
commits or refuses with the lock held. A repository's row takes its links, manifests and tags
with it before it goes, while its name is still there to find its namespace.

The registry's stored blobs (how many, their bytes), which the usage page shows too, are kept the
same way by triggers on blobs, in 16 rows by the first hex digit of the digest (a row summed by
every blob write would make concurrent pushes wait for each other); on PostgreSQL deferred to the
commit, as 0010's are, so that a row is locked after every other lock of its transaction.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The statements below are made of these constants only: no input reaches them (hence the S608s).
NAMESPACE = {
    "sqlite": "CASE WHEN instr({name}, '/') > 0 "
    "THEN substr({name}, 1, instr({name}, '/') - 1) ELSE '' END",
    "postgresql": "CASE WHEN strpos({name}, '/') > 0 "
    "THEN substr({name}, 1, strpos({name}, '/') - 1) ELSE '' END",
}

# PostgreSQL: one function per trigger; `ns` is the locked namespace, NULL when the repository is
# gone (nothing to count then).
LOCKED = """CREATE FUNCTION portside_namespace_locked(repository integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE found text;
BEGIN
    SELECT {namespace} INTO found FROM repositories WHERE id = repository;
    IF found IS NOT NULL THEN
        INSERT INTO namespaces (name) VALUES (found) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM namespaces WHERE name = found FOR UPDATE;
    END IF;
    RETURN found;
END $$"""
POSTGRES_BODIES = {
    "linked": """INSERT INTO namespace_blobs AS nb (namespace, digest, size, links)
        VALUES (ns, NEW.digest,
            COALESCE((SELECT b.size FROM blobs b WHERE b.digest = NEW.digest), 0), 1)
        ON CONFLICT (namespace, digest) DO UPDATE SET links = nb.links + 1
        RETURNING nb.links, nb.size INTO n, s;
        IF n = 1 THEN UPDATE namespaces SET size = size + s WHERE name = ns; END IF;""",
    "unlinked": """UPDATE namespace_blobs SET links = links - 1
        WHERE namespace = ns AND digest = OLD.digest RETURNING links, size INTO n, s;
        IF n = 0 THEN
            DELETE FROM namespace_blobs WHERE namespace = ns AND digest = OLD.digest;
            UPDATE namespaces SET size = size - s WHERE name = ns;
        END IF;""",
    "manifest_added": """UPDATE repositories SET manifests = manifests + 1
        WHERE id = NEW.repository_id RETURNING manifests INTO n;
        IF n = 1 THEN
            UPDATE namespaces SET repositories = repositories + 1 WHERE name = ns;
        END IF;""",
    "manifest_removed": """UPDATE repositories SET manifests = manifests - 1
        WHERE id = OLD.repository_id RETURNING manifests INTO n;
        IF n = 0 THEN
            UPDATE namespaces SET repositories = repositories - 1 WHERE name = ns;
        END IF;""",
    "tag_added": "UPDATE namespaces SET tags = tags + 1 WHERE name = ns;",
    "tag_removed": "UPDATE namespaces SET tags = tags - 1 WHERE name = ns;",
}

# SQLite runs one writer at a time: its triggers need no lock, and have no variables, so each
# statement finds the namespace again (NS_OF: of the row's repository).
NS_OF = "(SELECT {namespace} FROM repositories WHERE id = {row}.repository_id)"
ENSURED = (
    "INSERT INTO namespaces (name) SELECT {namespace} FROM repositories "
    "WHERE id = {row}.repository_id ON CONFLICT (name) DO NOTHING"
)
THIS_BLOB = "nb.namespace = namespaces.name AND nb.digest = {row}.digest"
SQLITE_BODIES = {
    "linked": [
        ENSURED,
        "INSERT INTO namespace_blobs (namespace, digest, size, links) "
        "SELECT {namespace}, NEW.digest, "
        "COALESCE((SELECT b.size FROM blobs b WHERE b.digest = NEW.digest), 0), 1 "
        "FROM repositories WHERE id = NEW.repository_id "
        "ON CONFLICT (namespace, digest) DO UPDATE SET links = links + 1",
        "UPDATE namespaces SET size = size + "  # noqa: S608
        f"(SELECT nb.size FROM namespace_blobs nb WHERE {THIS_BLOB}) "
        "WHERE name = {ns} AND "
        f"(SELECT nb.links FROM namespace_blobs nb WHERE {THIS_BLOB}) = 1",
    ],
    "unlinked": [
        "UPDATE namespace_blobs SET links = links - 1 "
        "WHERE namespace = {ns} AND digest = OLD.digest",
        "UPDATE namespaces SET size = size - "  # noqa: S608
        f"(SELECT nb.size FROM namespace_blobs nb WHERE {THIS_BLOB} AND nb.links = 0) "
        "WHERE name = {ns} AND "
        f"EXISTS (SELECT 1 FROM namespace_blobs nb WHERE {THIS_BLOB} AND nb.links = 0)",
        "DELETE FROM namespace_blobs WHERE namespace = {ns} AND digest = OLD.digest AND links = 0",
    ],
    "manifest_added": [
        ENSURED,
        "UPDATE repositories SET manifests = manifests + 1 WHERE id = NEW.repository_id",
        "UPDATE namespaces SET repositories = repositories + 1 WHERE name = {ns} AND "
        "(SELECT manifests FROM repositories WHERE id = NEW.repository_id) = 1",
    ],
    "manifest_removed": [
        "UPDATE repositories SET manifests = manifests - 1 WHERE id = OLD.repository_id",
        "UPDATE namespaces SET repositories = repositories - 1 WHERE name = {ns} AND "
        "(SELECT manifests FROM repositories WHERE id = OLD.repository_id) = 0",
    ],
    "tag_added": [ENSURED, "UPDATE namespaces SET tags = tags + 1 WHERE name = {ns}"],
    "tag_removed": ["UPDATE namespaces SET tags = tags - 1 WHERE name = {ns}"],
}
# name → (table, event, the row it reads: NEW or OLD)
TRIGGERS = {
    "linked": ("repository_blobs", "INSERT", "NEW"),
    "unlinked": ("repository_blobs", "DELETE", "OLD"),
    "manifest_added": ("manifests", "INSERT", "NEW"),
    "manifest_removed": ("manifests", "DELETE", "OLD"),
    "tag_added": ("tags", "INSERT", "NEW"),
    "tag_removed": ("tags", "DELETE", "OLD"),
}
# The stored blobs' totals: the row of a digest's first hex digit ("sha256:" and "sha512:" alike).
SLOT = "substr({row}.digest, 8, 1)"
TOTALS_ADDED = (
    "INSERT INTO blob_totals (slot, blobs, size) VALUES ({slot}, 1, NEW.size) "
    "ON CONFLICT (slot) DO UPDATE "
    "SET blobs = blob_totals.blobs + 1, size = blob_totals.size + excluded.size"
)
TOTALS_REMOVED = (
    "UPDATE blob_totals SET blobs = blobs - 1, size = size - OLD.size WHERE slot = {slot}"
)
STORED = "'stored'"  # base.py BlobState.STORED

# A repository's rows, deleted before the repository (a cascade would run after it is gone).
OWNED = ("tags", "manifests", "repository_blobs")


def _create_postgres_triggers() -> None:
    namespace = NAMESPACE["postgresql"].format(name="name")
    op.execute(LOCKED.format(namespace=namespace))
    for name, (table, event, row) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION portside_namespace_{name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "DECLARE ns text; n bigint; s bigint; "
            f"BEGIN ns := portside_namespace_locked({row}.repository_id); "
            f"IF ns IS NULL THEN RETURN NULL; END IF; {POSTGRES_BODIES[name]} "
            "RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER tr_namespace_{name} AFTER {event} ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION portside_namespace_{name}()"
        )
    deletes = " ".join(f"DELETE FROM {t} WHERE repository_id = OLD.id;" for t in OWNED)  # noqa: S608
    op.execute(
        "CREATE FUNCTION portside_namespace_repository_removed() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN {deletes} RETURN OLD; END $$"
    )
    op.execute(
        "CREATE TRIGGER tr_namespace_repository_removed BEFORE DELETE ON repositories "
        "FOR EACH ROW EXECUTE FUNCTION portside_namespace_repository_removed()"
    )


def _create_postgres_totals() -> None:
    added = TOTALS_ADDED.format(slot=SLOT.format(row="NEW"))
    removed = TOTALS_REMOVED.format(slot=SLOT.format(row="OLD"))
    op.execute(
        "CREATE FUNCTION portside_blob_totals() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state = {STORED} THEN {removed}; END IF; "
        f"IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state = {STORED} THEN {added}; END IF; "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER tr_blob_totals "
        "AFTER INSERT OR UPDATE OF state, size OR DELETE ON blobs DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION portside_blob_totals()"
    )


def _create_sqlite_totals() -> None:
    added = TOTALS_ADDED.format(slot=SLOT.format(row="NEW"))
    removed = TOTALS_REMOVED.format(slot=SLOT.format(row="OLD"))
    for name, event, when, statements in [
        ("added", "INSERT", f"NEW.state = {STORED}", [added]),
        ("removed", "DELETE", f"OLD.state = {STORED}", [removed]),
        ("left", "UPDATE OF state, size", f"OLD.state = {STORED}", [removed]),
        ("entered", "UPDATE OF state, size", f"NEW.state = {STORED}", [added]),
    ]:
        body = "".join(f"{statement}; " for statement in statements)
        op.execute(
            f"CREATE TRIGGER tr_blob_totals_{name} AFTER {event} ON blobs "
            f"FOR EACH ROW WHEN {when} BEGIN {body}END"
        )


def _create_sqlite_triggers() -> None:
    namespace = NAMESPACE["sqlite"].format(name="name")
    for name, (table, event, row) in TRIGGERS.items():
        ns = NS_OF.format(namespace=namespace, row=row)
        body = "".join(
            statement.format(namespace=namespace, ns=ns, row=row) + "; "
            for statement in SQLITE_BODIES[name]
        )
        op.execute(
            f"CREATE TRIGGER tr_namespace_{name} AFTER {event} ON {table} "
            f"FOR EACH ROW BEGIN {body}END"
        )
    deletes = "".join(f"DELETE FROM {t} WHERE repository_id = OLD.id; " for t in OWNED)  # noqa: S608
    op.execute(
        "CREATE TRIGGER tr_namespace_repository_removed BEFORE DELETE ON repositories "
        f"FOR EACH ROW BEGIN {deletes}END"
    )


def _backfill(dialect: str) -> None:
    bind = op.get_bind()
    namespace = NAMESPACE[dialect]
    of_repository = namespace.format(name="r.name")
    op.execute(
        "UPDATE repositories SET manifests = "
        "(SELECT count(*) FROM manifests m WHERE m.repository_id = repositories.id)"
    )
    op.execute(
        "INSERT INTO namespace_blobs (namespace, digest, size, links) "  # noqa: S608
        f"SELECT {of_repository}, l.digest, b.size, count(*) FROM repository_blobs l "
        "JOIN repositories r ON r.id = l.repository_id JOIN blobs b ON b.digest = l.digest "
        f"GROUP BY {of_repository}, l.digest, b.size"
    )
    names = f"SELECT DISTINCT {of_repository} FROM repositories r"  # noqa: S608
    counts: dict[str, dict[str, int]] = {name: {} for (name,) in bind.execute(sa.text(names))}
    queries = {
        "size": "SELECT namespace, sum(size) FROM namespace_blobs GROUP BY namespace",
        "repositories": f"SELECT {of_repository}, count(*) FROM repositories r "  # noqa: S608
        f"WHERE r.manifests > 0 GROUP BY {of_repository}",
        "tags": f"SELECT {of_repository}, count(*) FROM tags t "  # noqa: S608
        f"JOIN repositories r ON r.id = t.repository_id GROUP BY {of_repository}",
    }
    for column, query in queries.items():
        for name, value in bind.execute(sa.text(query)):
            counts[name][column] = int(value)
    rows = [
        {
            "name": name,
            "size": found.get("size", 0),
            "repositories": found.get("repositories", 0),
            "tags": found.get("tags", 0),
        }
        for name, found in counts.items()
    ]
    op.execute(
        f"INSERT INTO blob_totals (slot, blobs, size) SELECT {SLOT.format(row='blobs')}, "  # noqa: S608
        f"count(*), sum(size) FROM blobs WHERE state = {STORED} GROUP BY {SLOT.format(row='blobs')}"
    )
    if rows:
        bind.execute(
            sa.text(
                "INSERT INTO namespaces (name, size, repositories, tags) "
                "VALUES (:name, :size, :repositories, :tags)"
            ),
            rows,
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("repositories", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tags", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "namespace_blobs",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("links", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "blob_totals",
        sa.Column("slot", sa.String(1), primary_key=True),
        sa.Column("blobs", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    # Not a batch: on SQLite that would rebuild repositories and drop 0012's triggers on it.
    op.add_column(
        "repositories", sa.Column("manifests", sa.BigInteger, nullable=False, server_default="0")
    )
    _backfill(dialect)
    if dialect == "postgresql":
        _create_postgres_triggers()
        _create_postgres_totals()
    else:
        _create_sqlite_triggers()
        _create_sqlite_totals()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    names = [*TRIGGERS, "repository_removed"]
    tables = [*(table for table, _, _ in TRIGGERS.values()), "repositories"]
    for name, table in zip(names, tables, strict=True):
        on = f" ON {table}" if dialect == "postgresql" else ""
        op.execute(f"DROP TRIGGER tr_namespace_{name}{on}")
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION portside_namespace_{name}()")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION portside_namespace_locked(integer)")
        op.execute("DROP TRIGGER tr_blob_totals ON blobs")
        op.execute("DROP FUNCTION portside_blob_totals()")
    else:
        for name in ("added", "removed", "left", "entered"):
            op.execute(f"DROP TRIGGER tr_blob_totals_{name}")
    op.drop_table("blob_totals")
    op.execute("ALTER TABLE repositories DROP COLUMN manifests")
    op.drop_table("namespace_blobs")
    op.drop_table("namespaces")
