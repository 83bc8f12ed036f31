"""The registry's domain services over one blob store and one metadata store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from portside.metadata.base import MetadataStore
from portside.registry.blobs import Blobs
from portside.registry.discovery import Discovery
from portside.registry.events import Recorder
from portside.registry.inventory import Inventory
from portside.registry.manifest_store import ManifestStore
from portside.registry.mirror import Mirror, UpstreamRoute
from portside.registry.policies import Policies
from portside.registry.repositories import Repositories
from portside.registry.uploads import Uploads
from portside.storage.base import BlobStore


@dataclass(frozen=True, slots=True)
class Registry:
    blobs: Blobs
    uploads: Uploads
    manifests: ManifestStore
    discovery: Discovery
    inventory: Inventory  # what the web UI shows
    metadata: MetadataStore
    events: Recorder
    repositories: Repositories  # whole repositories' deletion
    mirror: Mirror | None = None  # the pull-through cache, when `mirroring` is configured

    @classmethod
    def build(
        cls,
        storage: BlobStore,
        metadata: MetadataStore,
        max_blob_size: int | None = None,
        redirect_seconds: int | None = None,
        upstreams: Sequence[UpstreamRoute] = (),
        events: Recorder | None = None,
        policies: Policies | None = None,
    ) -> Registry:
        """upstreams: those of a pull-through cache; none, no cache. events: what tells the
        notification endpoints and the audit log; None, nothing does. policies: immutable
        tags and quotas; None, none."""
        events = events or Recorder()
        policies = policies or Policies()
        manifests = ManifestStore(storage, metadata, events, policies)
        mirror = Mirror(storage, metadata, upstreams, manifests) if upstreams else None
        discovery = Discovery(metadata)
        return cls(
            blobs=Blobs(storage, metadata, redirect_seconds, events),
            uploads=Uploads(storage, metadata, max_blob_size, events, policies.quotas),
            manifests=manifests,
            discovery=discovery,
            inventory=Inventory(storage, metadata, manifests, discovery),
            metadata=metadata,
            events=events,
            repositories=Repositories(metadata, events, policies.immutable),
            mirror=mirror,
        )
