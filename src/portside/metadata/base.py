"""The metadata store interface and the records it returns (frozen dataclasses, never ORM rows).

Tags, manifests, blob links and upload sessions live here and only here; blob bytes live in storage.
The interface comes in parts, one for each kind of user (the request path, the pull-through cache,
the garbage collector, the token service, the failed-login limits); MetadataStore is all of them,
and every backend passes the one suite in tests/contract/metadata_store.py. Names and digests
arrive validated. Methods are atomic: each is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Protocol

# A collector deletes the bytes of a blob it marked within half of this; a mark older than this
# is abandoned (its collector died) and a writer may take the blob over (registry/gc.py).
MARK_TTL: Final = timedelta(seconds=60)

# Expired refresh tokens add_refresh_token deletes at most, per token it adds.
REFRESH_PRUNE_BATCH: Final = 16

# Garbage collection runs record_collection keeps, the newest.
COLLECTION_RUNS_KEPT: Final = 100

# Failed logins older than the window record_failure deletes at most, per failure it records.
LOGIN_FAILURE_PRUNE_BATCH: Final = 16

# The longest artifact type a manifest record keeps (manifests.artifact_type, tables.py): the
# registry refuses longer ones (MANIFEST_INVALID) rather than let a database cut or refuse them.
ARTIFACT_TYPE_MAX: Final = 255


class Conflict(Exception):
    """A write lost a race: the row changed since it was read."""


class Missing(Exception):
    """References a manifest needs that its repository cannot read (or no longer can)."""

    def __init__(self, digests: Sequence[str]) -> None:
        super().__init__(f"{len(digests)} missing: {', '.join(digests[:5])}")
        self.digests = list(digests)


class TagLocked(Exception):
    """A write that would move or remove a tag its caller declared immutable."""

    def __init__(self, tag: str, digest: str) -> None:
        super().__init__(f"tag {tag} is on {digest}")
        self.tag = tag
        self.digest = digest


@dataclass(frozen=True, slots=True)
class NamespaceLimits:
    """A quota on a namespace (the first component of its repositories' names; "" for names of
    one component), as put_manifest checks it: None, no limit on that."""

    namespace: str
    bytes: int | None
    repositories: int | None
    tags: int | None


class OverQuota(Exception):
    """A write that would take its namespace past a limit of its NamespaceLimits: which one
    (bytes, repositories, tags), the usage before the write, the limit, what the write adds."""

    def __init__(self, namespace: str, what: str, used: int, limit: int, adding: int) -> None:
        super().__init__(f"namespace {namespace!r}: {used} + {adding} {what} over {limit}")
        self.namespace = namespace
        self.what = what
        self.used = used
        self.limit = limit
        self.adding = adding


# Whether a tag is immutable, by its name: asked in the store's transaction, so it must be
# quick and raise nothing.
TagFilter = Callable[[str], bool]


class BlobState(StrEnum):
    STORED = "stored"  # the bytes are in storage
    PENDING = "pending"  # reserved by a writer: the bytes may not be in place (yet)
    DELETING = "deleting"  # marked by a collector, which deletes the bytes, then the row


@dataclass(frozen=True, slots=True)
class Unreserved:
    """What a writer of bytes it can write again (a blob or manifest held in memory) records them
    with instead of a reservation (check_blob): how many blobs collectors had forgotten when it
    looked, and whether the bytes were in place then (so it did not write them). Its record
    fails with Unrecordable if a collector has forgotten any blob since (the bytes may have gone
    with it), is deleting this one, or, where the writer wrote nothing, has left it unstored."""

    forgotten: int
    stored: bool


# What records a blob's bytes: a reservation's token, or Unreserved.
Claim = str | Unreserved


class Unrecordable(Exception):
    """An Unreserved record that cannot be trusted: write the bytes again and retry, or take a
    reservation."""


class Reservation(StrEnum):
    """What reserve_blob found."""

    STORED = "stored"  # the bytes are in place: record the blob without writing them
    ABSENT = "absent"  # write the bytes, then record the blob
    BUSY = "busy"  # a collector is deleting the bytes: nothing was reserved; ask again shortly


class ReferenceKind(StrEnum):
    BLOB = "blob"
    MANIFEST = "manifest"


@dataclass(frozen=True, slots=True)
class Reference:
    """A digest a manifest points at: a blob (config, layer) or a child manifest (of an index)."""

    digest: str
    kind: ReferenceKind


@dataclass(frozen=True, slots=True)
class Manifest:
    repository: str
    digest: str
    media_type: str
    size: int
    artifact_type: str | None = None
    subject: str | None = None
    annotations: str | None = None  # JSON text of the manifest's annotations, as pushed
    # org.opencontainers.image.description: the manifest's annotation, else its config's label
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    """A repository as search lists it. Its description is that of its newest manifest (latest
    pushed: created_at) that has one; moving a tag to an older manifest does not change it."""

    name: str
    description: str | None


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository: str
    offset: int
    # sha256 of the first hashed_offset bytes, so that the last request of an upload can skip
    # re-reading the data when it lands in another process.
    hashed_offset: int
    hashed_digest: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Lease:
    """A named lease: holder has it until expires_at."""

    name: str
    holder: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A refresh token of the built-in token service, by the SHA-256 (hex) of the token: the
    token itself is never stored."""

    token_hash: str
    username: str
    service: str
    issued_at: datetime
    expires_at: datetime | None  # None: until revoked
    last_used_at: datetime | None = None


# What the web UI lists (BrowseStore), and what it keeps of its logins (SessionStore).


class RepositoryOrder(StrEnum):
    NAME = "name"  # lexical (code point) order
    PUSHED = "pushed"  # the last pushed first
    SIZE = "size"  # the largest first


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    """A repository as the web UI lists it: the bytes of the blobs linked to it, each counted
    once; its last manifest push or tag move; its newest manifest's description."""

    id: int
    name: str
    description: str | None
    size: int
    pushed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TagRow:
    """A tag and the manifest it points at."""

    name: str
    digest: str
    updated_at: datetime
    media_type: str
    size: int  # of the manifest itself
    artifact_type: str | None
    pulled_at: datetime | None  # the last pull, where recorded (pull times are per minute)


@dataclass(frozen=True, slots=True)
class NamespaceUsage:
    """Storage of the repositories under a namespace: the first component of their names, or ""
    for names of one component."""

    namespace: str
    repositories: int
    size: int  # bytes of the blobs linked to any of them, each counted once


@dataclass(frozen=True, slots=True)
class CollectionRun:
    """A garbage collection run that finished: when, how long it took, what it freed; summary is
    JSON text of what it removed, by kind."""

    finished_at: datetime
    seconds: float
    bytes_freed: int
    summary: str


@dataclass(frozen=True, slots=True)
class UiSession:
    """A login to the web UI, by the SHA-256 (hex) of its cookie: the cookie is never stored.
    csrf is the token that the session's forms carry."""

    token_hash: str
    username: str
    csrf: str
    created_at: datetime
    expires_at: datetime


# The whole reference graph at one moment (gc_snapshot): what tests compare states by. The
# collector reads in pages instead (ManifestCandidate, Holders), whatever the registry's size.


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    repository: str
    digest: str
    subject: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TagRecord:
    repository: str
    name: str
    digest: str


@dataclass(frozen=True, slots=True)
class ReferenceRecord:
    repository: str
    manifest: str  # the referencing manifest's digest
    digest: str
    kind: ReferenceKind


@dataclass(frozen=True, slots=True)
class LinkRecord:
    repository: str
    digest: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BlobRecord:
    digest: str
    size: int
    state: BlobState
    created_at: datetime
    marked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    digest: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ManifestCandidate:
    """An untagged manifest created before a cutoff that no tagged or young manifest needs
    directly (as its child, or as its subject): garbage unless a chain of such candidates leads
    to one that stays. With the manifests that list it as a child, its subject if that is a
    manifest of the repository, and the digests it references."""

    repository: str
    digest: str
    subject: str | None
    parents: tuple[str, ...]
    references: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Holders:
    """Some of what holds a digest: repositories linking it, and (repository, manifest) pairs
    referencing it."""

    links: tuple[str, ...]
    references: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    manifests: tuple[ManifestRecord, ...]
    tags: tuple[TagRecord, ...]
    references: tuple[ReferenceRecord, ...]
    links: tuple[LinkRecord, ...]
    blobs: tuple[BlobRecord, ...]
    reservations: tuple[ReservationRecord, ...]
    uploads: tuple[Upload, ...]


# What a change leaves behind (journal.py writes it): notification events and audit entries.


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification event for one endpoint, as the JSON text it is sent as: an outbox row."""

    endpoint: str
    payload: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what, when and from where. actor None: anonymous (or unknown, for a failed
    login whose username is in detail); detail is JSON text."""

    at: datetime
    action: str
    actor: str | None = None
    address: str | None = None
    repository: str | None = None
    digest: str | None = None
    tag: str | None = None
    previous: str | None = None  # the digest a moved tag pointed at before
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Journal:
    """Written in the transaction of the change it describes, and only if the change happens."""

    notices: tuple[Notice, ...] = ()
    audit: tuple[AuditEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.notices or self.audit)


QUIET: Final = Journal()

# The audit action put_manifest writes instead of its journal's when the push moved a tag.
TAG_MOVED: Final = "tag"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    endpoint: str
    payload: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit entries to list: each field that is set must match."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    repository: str | None = None
    action: str | None = None
    limit: int = 1000


class RequestStore(Protocol):
    """What the request path reads and writes: blobs and their links to repositories, upload
    sessions, manifests and tags, and the listings discovery serves.

    A write that takes a journal writes it in its own transaction, last (after every lock it
    takes, so that of two changes to the same rows the later one's journal rows get the higher
    ids), and only when it did what was asked: a delete or a mount that found nothing writes
    none."""

    # blobs
    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob readable in repository (pushed, mounted or a manifest there)."""

    async def link_blob(
        self, repository: str, digest: str, size: int, reservation: Claim, journal: Journal = QUIET
    ) -> None:
        """Record the blob as stored, ending its reservation, and link it to repository,
        creating the repository. Conflict if the reservation has ended (expired); Unrecordable
        if it is Unreserved and untrustworthy."""

    async def complete_upload(
        self,
        id: str,
        repository: str,
        digest: str,
        size: int,
        reservation: Claim,
        journal: Journal = QUIET,
    ) -> None:
        """In one transaction: link_blob(repository, digest, size, reservation) and end the
        upload session (if it is still there)."""

    async def unlink_blob(self, repository: str, digest: str, journal: Journal = QUIET) -> bool:
        """Remove the link; False if there was none."""

    async def reserve_blob(self, digest: str, size: int, token: str) -> Reservation:
        """Reserve digest for a writer under token (unique): while the reservation lasts, no
        collector marks the blob, so bytes the writer puts in place stay there. A writer stores
        a blob's bytes only under a reservation, and records them only by passing the token to
        link_blob, complete_upload or put_manifest, which end it; release_blob ends it
        otherwise. BUSY reserves nothing; a mark older than MARK_TTL is taken over."""

    async def release_blob(self, token: str) -> None:
        """End a reservation without recording anything; no error if it has ended."""

    async def check_blob(self, digest: str) -> Unreserved | None:
        """For a writer that can write the bytes again: the claim to record them with in place
        of a reservation, which costs no write (its `stored`: whether to write them). None while
        a collector is deleting the blob: then reserve_blob, which waits for it."""

    async def mount_blob(
        self, repository: str, digest: str, source: str, journal: Journal = QUIET
    ) -> int | None:
        """Link a stored blob that source can read into repository, creating the repository;
        its size, or None (and nothing linked) if source cannot read it."""

    # upload sessions
    async def create_upload(self, id: str, repository: str) -> Upload: ...

    async def get_upload(self, repository: str, id: str) -> Upload | None: ...

    async def advance_upload(
        self,
        id: str,
        expected_offset: int,
        offset: int,
        hashed_digest: str | None,
    ) -> Upload:
        """Move the upload from expected_offset to offset; Conflict if it is no longer at
        expected_offset or is gone. hashed_digest is the sha256 of bytes [0, offset), if known."""

    async def delete_upload(self, id: str) -> bool: ...

    # manifests and tags
    async def missing_references(
        self, repository: str, references: Sequence[Reference]
    ) -> list[str]:
        """The digests among references that repository cannot read."""

    async def put_manifest(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: Claim,
        journal: Journal = QUIET,
        immutable: bool = False,
        limits: NamespaceLimits | None = None,
    ) -> None:
        """Store the manifest's record and references, record its bytes as a stored blob
        (ending reservation, as link_blob does) linked to the repository, point tag at it.
        Missing (and nothing stored) if the repository cannot read every reference, checked
        in the transaction that records them. Storing the same manifest again is fine; Conflict
        if a concurrent write interfered or the reservation has ended. Where the push moved
        the tag from another manifest, the journal's audit entries are written with action
        TAG_MOVED and that manifest's digest as `previous`. With immutable, TagLocked (and
        nothing stored) if the tag is on another manifest. With limits, OverQuota (and nothing
        stored) if the write adds to a usage of the namespace that it leaves over its limit:
        checked with the namespace's usage locked, so that concurrent pushes into it, through
        any worker or instance, are checked one after the other."""

    async def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """By digest when reference contains a colon, else by tag."""

    async def delete_manifest(
        self,
        repository: str,
        digest: str,
        journal: Journal = QUIET,
        protected: TagFilter | None = None,
    ) -> bool:
        """Remove the manifest and every tag pointing at it; False if it was not there.
        TagLocked (and nothing removed) if protected names one of those tags."""

    async def delete_tag(self, repository: str, tag: str, journal: Journal = QUIET) -> bool: ...

    # listings
    async def repository_exists(self, repository: str) -> bool: ...

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str]:
        """Tags in lexical (code point) order after last, at most n of them."""

    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        """Names of repositories holding at least one manifest, in lexical (code point) order
        after last, at most n of them."""

    async def count_search_matches(self, query: str, cap: int) -> int:
        """How many repositories search_repositories lists for query, counted no further than
        cap + 1, so that no more matches than that are read."""

    async def search_repositories(
        self, query: str, after: str | None, limit: int
    ) -> list[RepositorySummary]:
        """Repositories holding at least one manifest whose name or description contains query,
        case-insensitively, its characters literally (an empty query matches all): at most
        limit of them after the name after, in lexical (code point) order of name."""

    async def list_referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[Manifest]:
        """Manifests in repository whose subject is the given digest."""


class BrowseStore(Protocol):
    """What the web UI reads: pages of repositories and tags in keyset order (each page costs the
    same whatever the registry's size), the bytes a pull of a manifest moves, storage by
    namespace, and the last garbage collection."""

    async def repository_rows(
        self, order: RepositoryOrder, text: str, after: RepositoryRow | None, limit: int
    ) -> list[RepositoryRow]:
        """At most limit repositories holding a manifest, whose name or description contains
        text (ignoring case; "" matches all), in order, after the row `after` (its sort key:
        name, or pushed_at or size then id)."""

    async def repository_row(self, name: str) -> RepositoryRow | None:
        """The repository's row, if it holds a manifest."""

    async def tag_rows(self, repository: str, after: str | None, limit: int) -> list[TagRow]:
        """At most limit tags of repository in lexical order after `after`, with their manifests."""

    async def tags_on(self, repository: str, digest: str) -> list[str]:
        """The tags pointing at the manifest, in lexical order."""

    async def pull_sizes(self, repository: str, digests: Collection[str]) -> dict[str, int]:
        """The bytes a pull of each of these manifests moves: the manifest, and each blob and
        child manifest it references (and theirs) once. Manifests not in repository are left
        out."""

    async def namespace_usage(self) -> list[NamespaceUsage]:
        """Storage of every namespace holding a repository with a manifest, by namespace."""

    async def stored_blobs(self) -> tuple[int, int]:
        """How many blobs are stored, and their bytes."""

    async def last_collection(self) -> CollectionRun | None: ...


class SessionStore(Protocol):
    """Logins to the web UI, shared by every worker and instance."""

    async def add_session(self, session: UiSession) -> None:
        """Insert the session (token_hash is unique), and delete at most REFRESH_PRUNE_BATCH
        sessions that expired before it was created, the earliest first."""

    async def find_session(self, token_hash: str) -> UiSession | None:
        """The session with this hash, expired or not."""

    async def delete_session(self, token_hash: str) -> bool:
        """End the session; False if there was none."""


class LeaseStore(Protocol):
    """Named leases with an expiry, shared by every worker and instance on the database."""

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> Lease:
        """Take or renew the lease for ttl if it is free, expired or holder's already; the lease
        as it now stands (holder has it if lease.holder == holder)."""

    async def release_lease(self, name: str, holder: str) -> None:
        """Let the lease go if holder has it."""


class CacheStore(RequestStore, LeaseStore, Protocol):
    """What the pull-through cache needs: the request path, a lease per blob it fills, blobs
    stored anywhere, and the manifests and tags it takes from an upstream."""

    async def blob_size(self, digest: str) -> int | None:
        """The size of a blob stored in the registry, linked anywhere or nowhere."""

    async def put_cached_manifest(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: Claim,
        at: datetime,
    ) -> None:
        """put_manifest for a manifest an upstream served (its digest verified): its references
        need not be readable in the repository, since a cache fetches blobs as they are pulled.
        Records it as cached, pulled at `at`, and its tag, if any, as checked upstream at `at`.
        A push of the tag later (put_manifest) makes it a tag of this registry's own."""

    async def cached_tag(self, repository: str, tag: str) -> datetime | None:
        """When the cached tag was last checked upstream; None if the tag is not a cached one
        (pushed here, or absent)."""

    async def touch_cached(
        self, repository: str, digest: str, at: datetime, tag: str | None = None
    ) -> None:
        """Record that the cached manifest was pulled at `at` (nothing if it is not a cached
        one), and, with tag, that the upstream still had the tag on it at `at`."""


class CollectorStore(LeaseStore, Protocol):
    """What garbage collection reads and deletes, under its lease. It reads in pages (each read
    returns candidates, at most some hundreds of repositories' or a limit's worth), so that its
    memory does not grow with the registry. Each deletion re-checks, in its transaction, that
    what it removes is still garbage, skipping rows a concurrent writer holds (registry/gc.py
    has the argument)."""

    async def repository_names(self, after: str | None, limit: int) -> list[str]:
        """Names of repositories, with manifests or not, in code-point order after `after`, at
        most limit of them."""

    async def manifest_candidates(
        self, repositories: Collection[str], before: datetime
    ) -> list[ManifestCandidate]:
        """The manifests of these repositories that are created before `before`, untagged, and
        neither a child nor a referrer of a manifest that is tagged or created since `before`,
        in (repository, digest) order."""

    async def dangling_tags(self, repositories: Collection[str]) -> dict[str, list[str]]:
        """The tags of these repositories that point at no manifest, by repository (only those
        with some)."""

    async def unreferenced_links(
        self, repositories: Collection[str], before: datetime
    ) -> dict[str, list[str]]:
        """The links of these repositories made before `before`, to digests that are no
        manifest there and that no manifest there references, by repository (only those with
        some), in digest order."""

    async def garbage_blobs(
        self, before: datetime, reserved_since: datetime, after: str | None, limit: int
    ) -> dict[str, int]:
        """Blob records that are garbage now (mark_blobs' definition, a reservation counting
        only if made since reserved_since), digest to size, in digest order after `after`, at
        most limit of them."""

    async def recorded_blobs(self, digests: Collection[str]) -> set[str]:
        """Those of digests that have a blob record."""

    async def upload_sessions(self, ids: Collection[str]) -> dict[str, datetime]:
        """Those of the upload sessions that exist, to when each was last updated."""

    async def expired_uploads(self, before: datetime, after: str | None, limit: int) -> list[str]:
        """Ids of upload sessions not updated since `before`, in order after `after`, at most
        limit of them."""

    # what only a dry run reads: the holders of what a run would remove, to count what that frees
    async def manifests_referencing(self, repository: str, digest: str, limit: int) -> list[str]:
        """Manifests of repository that reference digest, at most limit of them."""

    async def links_made_before(
        self, repository: str, digests: Collection[str], before: datetime
    ) -> list[str]:
        """Those of digests linked in repository before `before` that are no manifest there."""

    async def blob_holders(self, digest: str, limit: int) -> Holders:
        """At most limit links of digest, and at most limit references to it."""

    async def releasable_blobs(
        self, digests: Collection[str], before: datetime, reserved_since: datetime
    ) -> dict[str, int]:
        """Those of digests that would be garbage but for their links and references (by age,
        state and reservations made since reserved_since, as garbage_blobs), to their sizes."""

    async def expired_reservations(self, before: datetime) -> int:
        """How many reservations were made before `before`."""

    async def delete_manifests(
        self,
        garbage: Mapping[str, Collection[str]],
        before: datetime,
        keep_referrers: bool,
        audit: AuditEntry | None = None,
        notices: Callable[[str, str], Sequence[Notice]] | None = None,
    ) -> dict[str, list[str]]:
        """Delete, in one transaction, those of each repository's digests (garbage: repository
        to digests) that are still garbage there, with their references and the links of their
        own digests; the digests deleted, by repository (only those with some), in digest
        order. Garbage: created before `before`, untagged, no child of a manifest that stays,
        and, with keep_referrers, no referrer of a manifest that stays (referrers follow their
        subject). With audit, an entry like it, with the repository and digest, for each
        deletion, in its transaction; with notices, the events notices(repository, digest)
        makes for each deletion, in the same transaction."""

    async def delete_dangling_tags(self, repositories: Collection[str]) -> dict[str, list[str]]:
        """Delete, in one transaction, the tags in these repositories that point at no
        manifest; their names by repository (only those with some), in order."""

    async def delete_links(
        self, links: Mapping[str, Collection[str]], before: datetime
    ) -> dict[str, list[str]]:
        """Unlink, in one transaction, those of each repository's digests (links: repository to
        digests) whose links were made before `before`, that no manifest of the repository
        references and that are no manifest there; the digests unlinked, by repository (only
        those with some), in digest order."""

    async def drop_reservations(self, before: datetime) -> int:
        """End the reservations made before `before` (their writers died or took too long)."""

    async def mark_blobs(
        self, digests: Collection[str], before: datetime, token: str
    ) -> dict[str, int]:
        """Mark as DELETING, by token, those of digests that are garbage: linked nowhere,
        referenced by no manifest, not reserved, and either recorded (STORED or PENDING) before
        `before` or marked DELETING more than MARK_TTL ago; digest to size of those marked."""

    async def claim_orphans(self, sizes: Mapping[str, int], token: str) -> list[str]:
        """Record, marked DELETING by token, those of the digests (to their sizes in storage)
        that have no blob record: bytes without a record, which no writer can be about to
        record; the digests claimed."""

    async def forget_blobs(self, digests: Collection[str], token: str) -> None:
        """Delete the records of digests still marked DELETING by token (their bytes are gone)."""

    async def expire_uploads(self, ids: Collection[str], before: datetime) -> list[str]:
        """Delete those of the upload sessions not updated since `before`; their ids."""

    # the pull-through cache's manifests, once unpulled for long enough
    async def expired_cached_manifests(self, before: datetime, limit: int) -> list[tuple[str, str]]:
        """(repository, digest) of cached manifests last pulled before `before`, the longest
        unpulled first, at most limit of them."""

    async def expire_cached_manifest(
        self, repository: str, digest: str, before: datetime, audit: AuditEntry | None = None
    ) -> bool:
        """Delete the cached manifest (as delete_manifest: its tags, references and link) if it
        was still last pulled before `before`; whether it was. With audit, an entry like it,
        with the repository and digest, in the same transaction."""

    async def record_collection(self, run: CollectionRun) -> None:
        """Record a run that finished; only the newest COLLECTION_RUNS_KEPT are kept."""


class TokenStore(Protocol):
    """Refresh tokens of the built-in token service, shared by every worker and instance."""

    async def add_refresh_token(self, token: RefreshToken) -> None:
        """Insert the token's row (token_hash is unique: a random token's hash), and delete at
        most REFRESH_PRUNE_BATCH rows that expired before token.issued_at, the earliest first, so
        that expired rows go a few at a time as people log in, without a scan."""

    async def find_refresh_token(self, token_hash: str) -> RefreshToken | None:
        """The token with this hash, expired or not; None if there is none."""

    async def use_refresh_token(self, token_hash: str, at: datetime) -> bool:
        """Record that the token was used at `at`; False if there is no such token."""

    async def delete_refresh_token(self, token_hash: str) -> bool:
        """Forget the token; False if there was none."""

    async def revoke_refresh_tokens(self, username: str) -> int:
        """Forget every token of username; how many there were."""


class ThrottleStore(Protocol):
    """Failed logins, by an opaque key of at most 64 characters (auth/ratelimit.py hashes the
    client address or username it counts against), shared by every worker and instance."""

    async def record_failure(self, key: str, at: datetime, since: datetime) -> int:
        """Record a failure of key at `at`; how many key has had since `since`, this one
        included. Deletes at most LOGIN_FAILURE_PRUNE_BATCH failures (of any key) older than
        `since`, the oldest first, so that old rows go a few at a time as failures come."""

    async def failures_since(self, key: str, since: datetime) -> list[datetime]:
        """When key failed since `since` (inclusive), the earliest first."""

    async def clear_failures(self, key: str) -> None:
        """Forget every failure of key."""


class JournalStore(LeaseStore, Protocol):
    """The outbox of notification events and the audit log, beside what the request path
    writes in its own transactions."""

    async def record(self, journal: Journal) -> None:
        """Write a journal of no change (pulls, logins, refusals) on its own."""

    async def pending_events(self, endpoint: str, limit: int) -> list[OutboxEvent]:
        """At most limit of the endpoint's events, in the order they were recorded (id)."""

    async def delete_events(self, ids: Collection[int]) -> None:
        """Forget delivered events; ids already gone are no error."""

    async def audit_entries(self, query: AuditQuery) -> list[AuditRecord]:
        """The newest query.limit entries that match, oldest first."""

    async def prune_audit(self, before: datetime, limit: int) -> int:
        """Delete at most limit entries made before `before`, the oldest first; how many."""


# What the registry's policies read and write (PolicyStore), and robot accounts (RobotStore).


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a namespace holds: the bytes of the blobs linked to its repositories (each blob
    once), its repositories holding a manifest, and its tags."""

    bytes: int
    repositories: int
    tags: int


@dataclass(frozen=True, slots=True)
class TagHistory:
    """A tag as retention judges it: when it was pushed (last moved) and last pulled."""

    name: str
    digest: str
    pushed_at: datetime
    pulled_at: datetime | None


@dataclass(frozen=True, slots=True)
class TagPull:
    repository: str
    tag: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RepositoryRemoval:
    """What a repository's deletion removed."""

    manifests: int
    tags: int


@dataclass(frozen=True, slots=True)
class RobotToken:
    """A robot account's access token, by the SHA-256 (hex) of its secret: the secret itself
    is never stored. scopes: the scopes it grants, space-separated."""

    token_hash: str
    name: str
    scopes: str
    created_at: datetime
    expires_at: datetime | None  # None: until revoked
    last_used_at: datetime | None = None


class PolicyStore(Protocol):
    """Namespace usage for quotas, tag times for retention, and a repository's deletion."""

    async def namespace_footprint(self, namespace: str) -> Footprint:
        """What the namespace (the first component of its repositories' names; "" for names of
        one component) holds now: one row that the store keeps, whatever the namespace's size."""

    async def namespace_footprints(self) -> dict[str, Footprint]:
        """What each namespace holding a repository with a manifest holds now."""

    async def namespace_holds(self, namespace: str, digest: str) -> bool:
        """Whether a repository of the namespace has the blob linked."""

    async def tag_history(self, repository: str) -> list[TagHistory]:
        """Every tag of the repository, in no particular order."""

    async def expire_tag(
        self,
        repository: str,
        history: TagHistory,
        pulled_before: datetime | None,
        journal: Journal = QUIET,
    ) -> bool:
        """Delete the tag if it still is as history says: on history.digest, pushed no later
        than history.pushed_at, and (with pulled_before) not pulled since pulled_before;
        whether it was deleted. Its manifest stays."""

    async def record_pulls(self, pulls: Sequence[TagPull]) -> None:
        """Record when tags were last pulled (a later time only); tags that are gone are
        skipped. Not durable: a pull time lost to a power cut harms nothing much."""

    async def delete_repository(
        self, repository: str, protected: TagFilter | None = None, journal: Journal = QUIET
    ) -> RepositoryRemoval | None:
        """Delete the repository's tags, manifests, references, links, cache rows and upload
        sessions, and the repository; None if there was none. TagLocked (and nothing deleted)
        if protected names one of its tags. Blobs stay, for garbage collection."""


class RobotStore(Protocol):
    """Robot accounts' access tokens, shared by every worker and instance."""

    async def add_robot(self, token: RobotToken) -> bool:
        """Insert the token; False (and nothing inserted) if a token has its name."""

    async def find_robot(self, token_hash: str) -> RobotToken | None:
        """The token of this secret's hash, expired or not."""

    async def robot_named(self, name: str) -> RobotToken | None: ...

    async def list_robots(self) -> list[RobotToken]:
        """Every token, by name."""

    async def use_robot(self, token_hash: str, at: datetime) -> None:
        """Record that the token was used at `at` (not durably)."""

    async def delete_robot(self, name: str) -> bool:
        """Revoke the token: forget it; False if there was none."""


@dataclass(frozen=True, slots=True)
class Condemned:
    """What condemn_blob took out of the registry."""

    found: bool  # False: there was no record of the blob (nothing was done)
    unlinked: tuple[str, ...]  # the repositories the blob was linked to (as no manifest)
    manifests: tuple[str, ...]  # the repositories where the blob was a manifest, now deleted


class MaintenanceStore(Protocol):
    """What verify, backup and restore read and repair, on a store that may be serving."""

    async def list_blobs(self, after: str | None, limit: int) -> list[BlobRecord]:
        """Blob records in every state, in digest order after `after`, at most limit of them
        (marked_at left out)."""

    async def unreadable_references(self, limit: int) -> list[ReferenceRecord]:
        """References of manifests that their repository cannot read: a blob not linked there or
        not STORED, a child manifest not there. Manifests of the pull-through cache, which
        fetches what they reference as it is pulled, are left out. At most limit of them, by
        repository, manifest and digest."""

    async def forget_blobs(self, digests: Collection[str], token: str) -> None:
        """As CollectorStore's: the records still marked DELETING by token."""

    async def condemn_blob(self, digest: str, token: str) -> Condemned:
        """Take a blob whose bytes cannot be served out of the registry, in one transaction:
        unlink it from every repository, delete every manifest whose bytes it is (with its tags
        and references), and mark its record DELETING by token, so that writers of the digest
        wait while the caller deletes the bytes, then calls forget_blobs(token). A push of the
        blob afterwards stores it anew."""


class MetadataStore(
    MaintenanceStore,
    PolicyStore,
    RobotStore,
    CacheStore,
    CollectorStore,
    TokenStore,
    ThrottleStore,
    JournalStore,
    BrowseStore,
    SessionStore,
    Protocol,
):
    """The whole store, as a backend implements it and the server builds it once."""

    async def gc_snapshot(self) -> Snapshot:
        """Every manifest, tag, reference, link, blob, reservation and upload session, read in
        one transaction: the whole state, for tests to compare (the collector reads in pages)."""

    async def close(self) -> None: ...
