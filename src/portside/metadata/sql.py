"""The metadata store on SQLAlchemy Core: SQLite (WAL) embedded, PostgreSQL for scale-out.

One class of each part (blobs, uploads, manifests, listings, the cache, collection and what it
reads, leases, refresh tokens, failed logins, the outbox and the audit log, what the web UI lists,
its sessions, what policies need, robot tokens) over the one engine and transactions of
engine.Database.
"""

from __future__ import annotations

from portside.metadata.blobs import SqlBlobs
from portside.metadata.browsing import SqlBrowsing
from portside.metadata.cache import SqlCache
from portside.metadata.collection import SqlCollection
from portside.metadata.garbage import SqlGarbage
from portside.metadata.journal import SqlJournal
from portside.metadata.leases import SqlLeases
from portside.metadata.listings import SqlListings
from portside.metadata.maintenance import SqlMaintenance
from portside.metadata.manifests import SqlManifests
from portside.metadata.policies import SqlPolicies
from portside.metadata.robots import SqlRobots
from portside.metadata.sessions import SqlSessions
from portside.metadata.throttle import SqlThrottle
from portside.metadata.tokens import SqlRefreshTokens
from portside.metadata.uploads import SqlUploads


class SqlMetadataStore(
    SqlBlobs,
    SqlUploads,
    SqlManifests,
    SqlListings,
    SqlCache,
    SqlCollection,
    SqlGarbage,
    SqlLeases,
    SqlRefreshTokens,
    SqlThrottle,
    SqlJournal,
    SqlBrowsing,
    SqlSessions,
    SqlPolicies,
    SqlRobots,
    SqlMaintenance,
):
    """MetadataStore over one SQLAlchemy engine; every method is one transaction."""
