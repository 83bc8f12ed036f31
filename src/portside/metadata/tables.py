"""The metadata schema, as SQLAlchemy Core tables. Alembic migrations in migrations/ create it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from portside.metadata.base import ARTIFACT_TYPE_MAX

metadata = MetaData()

DIGEST = String(200)
# A 64-bit autoincrement key; on SQLite an INTEGER, its rowid, which alone autoincrements there.
ROW_ID = BigInteger().with_variant(Integer, "sqlite")

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # What the web UI lists and sorts by, kept by triggers on repository_blobs, manifests and
    # tags (0010): the bytes of the blobs linked here, each once; the last manifest push or tag
    # move; the newest manifest's description.
    Column("size", BigInteger, nullable=False, server_default="0"),
    Column("pushed_at", DateTime(timezone=True)),
    Column("description", Text),
    # How many manifests it holds, kept by triggers (0013): it counts in its namespace's
    # repositories while that is above 0.
    Column("manifests", BigInteger, nullable=False, server_default="0"),
    Index("ix_repositories_pushed", "pushed_at", "id"),
    Index("ix_repositories_size", "size", "id"),
)

# Each namespace's usage, kept by triggers on repository_blobs, manifests and tags (0013): the
# bytes of the blobs linked to its repositories (each blob once), its repositories holding a
# manifest, its tags. A namespace is registry/quotas.py's namespace_of of a repository name.
namespaces = Table(
    "namespaces",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("size", BigInteger, nullable=False, server_default="0"),
    Column("repositories", BigInteger, nullable=False, server_default="0"),
    Column("tags", BigInteger, nullable=False, server_default="0"),
)

# Per namespace and blob, how many of the namespace's repositories link the blob, and its size
# when the first did: the blob counts in the namespace's size while links is above 0 (0013).
namespace_blobs = Table(
    "namespace_blobs",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("links", BigInteger, nullable=False),
)

# The stored blobs (how many, their bytes), kept by triggers on blobs in a row per first hex digit
# of the digest, so that concurrent writers seldom wait for each other on one row (0013).
blob_totals = Table(
    "blob_totals",
    metadata,
    Column("slot", String(1), primary_key=True),
    Column("blobs", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # stored | pending (reserved, bytes on their way) | deleting (marked by a collector): base.py
    # BlobState, and registry/gc.py for why (0003)
    Column("state", String(16), nullable=False, server_default="stored"),
    Column("marked_at", DateTime(timezone=True)),
    Column("marked_by", String(64)),
)

# A writer's claim on a digest while it stores the bytes, so that no collector deletes them (0003)
blob_reservations = Table(
    "blob_reservations",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("digest", DIGEST, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_blob_reservations_digest", "digest"),
)

# One row (none before the first forget: 0): how many blobs collectors have forgotten (rows
# deleted after their bytes), so that a write recorded without a reservation can tell whether
# its bytes may have gone (base.py Unreserved) (0014)
BLOB_FORGETS_ROW = 1  # the id of its one row
blob_forgets = Table(
    "blob_forgets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("forgotten", BigInteger, nullable=False),
)

# Named leases with an expiry: which process collects garbage, and when the next run is due (0003)
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", ForeignKey("blobs.digest"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_repository_blobs_digest", "digest"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("repository_id", ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("artifact_type", String(ARTIFACT_TYPE_MAX)),
    Column("subject", DIGEST),
    Column("annotations", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # org.opencontainers.image.description of the manifest, else of its config's labels (0002)
    Column("description", Text),
    Index("ix_manifests_subject", "repository_id", "subject"),
    Index("ix_manifests_created", "repository_id", "created_at"),
)

# Search shows a repository's newest description: its newest manifest that has one (0009).
Index(
    "ix_manifests_described",
    manifests.c.repository_id,
    manifests.c.created_at,
    manifests.c.digest,
    sqlite_where=manifests.c.description.is_not(None),
    postgresql_where=manifests.c.description.is_not(None),
)

manifest_references = Table(
    "manifest_references",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("manifest_digest", DIGEST, primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("kind", String(16), nullable=False),
    Index("ix_manifest_references_digest", "digest"),
)

tags = Table(
    "tags",
    metadata,
    Column("repository_id", ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("digest", DIGEST, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The last pull by this tag, written a batch at a time, for retention rules (0011)
    Column("pulled_at", DateTime(timezone=True)),
    Index("ix_tags_digest", "repository_id", "digest"),
)

# Catalog and tag pages sort and compare names in code-point order (COLLATE "C"), which
# PostgreSQL's unique indexes, in the database's collation, cannot serve; SQLite compares bytes
# already (0009).
Index("ix_repositories_name_c", repositories.c.name.collate("C")).ddl_if(dialect="postgresql")
Index("ix_tags_name_c", tags.c.repository_id, tags.c.name.collate("C")).ddl_if(dialect="postgresql")

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("repository", String(255), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("hashed_offset", BigInteger, nullable=False),
    Column("hashed_digest", DIGEST),
    # Read by no version since chunks are written in place: kept so that no migration is needed.
    Column("part", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Refresh tokens of the built-in token service, by the SHA-256 (hex) of the token: never the token
# itself. expires_at NULL: until revoked. Expired rows are pruned a few at a time on insert (0004)
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", Text, nullable=False),
    Column("service", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Index("ix_refresh_tokens_username", "username"),
    Index("ix_refresh_tokens_expires", "expires_at"),
)

# Manifests a pull-through cache took from an upstream, and when each was last pulled: garbage
# collection expires those not pulled for `mirroring.keep_unpulled` (0005)
cached_manifests = Table(
    "cached_manifests",
    metadata,
    Column("repository_id", ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("pulled_at", DateTime(timezone=True), nullable=False),
    Index("ix_cached_manifests_pulled", "pulled_at"),
)

# Tags a pull-through cache took from an upstream, and when each was last checked there (0005)
cached_tags = Table(
    "cached_tags",
    metadata,
    Column("repository_id", ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("checked_at", DateTime(timezone=True), nullable=False),
)

# Failed logins, by a SHA-256 (hex) of what they count against (a client address, a username):
# one row per failure; rows older than the window are pruned a few at a time per failure (0006)
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Index("ix_login_failures_key", "key", "failed_at"),
    Index("ix_login_failures_failed", "failed_at"),
)

# Notification events waiting for their endpoint, one row per event and endpoint, deleted once
# delivered: no "last delivered id" cursor, which a lower id committed late would slip past (0007)
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("endpoint", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_outbox_endpoint", "endpoint", "id"),
)

# Who did what, when and from where; pruned after `audit.retention` (0008)
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", Text),
    Column("address", String(255)),
    Column("repository", String(255)),
    Column("digest", DIGEST),
    Column("tag", String(128)),
    Column("previous", DIGEST),
    Column("detail", Text),
    Index("ix_audit_log_at", "at"),
)

# Logins to the web UI, by the SHA-256 (hex) of the session cookie: never the cookie itself; csrf
# is the token its forms carry. Expired rows are pruned a few at a time on insert (0010)
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", Text, nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_ui_sessions_expires", "expires_at"),
    Index("ix_ui_sessions_username", "username"),
)

# Garbage collection runs, the newest kept: when each ended, how long it took, what it freed
# (summary: JSON of what it removed, by kind) (0010)
gc_runs = Table(
    "gc_runs",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("bytes_freed", BigInteger, nullable=False),
    Column("summary", Text, nullable=False),
)

# Robot accounts' access tokens, by the SHA-256 (hex) of the secret: never the secret itself;
# scopes: the repository scopes it grants, space-separated (0011)
robot_tokens = Table(
    "robot_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("scopes", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
)
