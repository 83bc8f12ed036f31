"""Pushing, pulling and deleting manifests and tags in a repository.

A manifest's bytes are a blob in storage; its record (media type, size, subject, artifact type and
the digests it references) is in metadata, so that reads by tag are one query and one blob read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from portside.metadata.base import (
    QUIET,
    Claim,
    Conflict,
    Journal,
    Manifest,
    Missing,
    NamespaceLimits,
    OverQuota,
    Reference,
    RequestStore,
    TagLocked,
)
from portside.registry import keys
from portside.registry.errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
)
from portside.registry.events import Action, Origin, Recorder, Target, references
from portside.registry.ingest import store
from portside.registry.manifests import config_description, parse
from portside.registry.names import Digest, is_tag
from portside.registry.policies import Policies
from portside.storage.base import BlobStore, NotFound

# Manifest bytes are immutable per digest; keeping recent ones spares a file read on hot tags.
CACHE_BYTES: Final = 32 * 1024 * 1024
# An image config is a few KiB; a bigger config blob is read no further for its description.
CONFIG_READ_MAX: Final = 1024 * 1024


class _ContentCache:
    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._capacity = capacity
        self._size = 0

    def get(self, digest: str) -> bytes | None:
        found = self._items.get(digest)
        if found is not None:
            self._items.move_to_end(digest)
        return found

    def put(self, digest: str, content: bytes) -> None:
        if len(content) > self._capacity // 16 or digest in self._items:
            return
        self._items[digest] = content
        self._size += len(content)
        while self._size > self._capacity:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped)


@dataclass(frozen=True, slots=True)
class PushedManifest:
    digest: Digest
    subject: str | None


class ManifestStore:
    def __init__(
        self,
        storage: BlobStore,
        metadata: RequestStore,
        recorder: Recorder | None = None,
        policies: Policies | None = None,
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._recorder = recorder or Recorder()
        self._cache = _ContentCache(CACHE_BYTES)
        self.policies = policies or Policies()

    async def stat(self, name: str, reference: str) -> Manifest:
        """The manifest's record by tag or digest; ManifestUnknown if the repository lacks it.

        A reference that is neither a tag nor a digest names no manifest: 404, the only failure
        the spec gives end-3 (distribution looks a malformed digest up as a tag, with the same
        MANIFEST_UNKNOWN)."""
        if ":" in reference:
            try:
                reference = str(Digest.parse(reference))
            except DigestInvalid as error:
                raise ManifestUnknown(error.detail) from None
        elif not is_tag(reference):
            raise ManifestUnknown({"reference": reference[:200]})
        manifest = await self._metadata.get_manifest(name, reference)
        if manifest is None:
            raise ManifestUnknown({"reference": reference})
        return manifest

    async def get(self, name: str, reference: str) -> tuple[Manifest, bytes]:
        manifest = await self.stat(name, reference)
        return manifest, await self.content(manifest.digest)

    async def content(self, digest: str) -> bytes:
        """The bytes of a manifest whose record the caller has read (NotFound if they are gone):
        a listing of many manifests reads their records in one query, not one each."""
        content = self._cache.get(digest)
        if content is None:
            content = await self._storage.get(keys.blob(Digest.parse(digest)))
            self._cache.put(digest, content)
        return content

    def pulled(self, manifest: Manifest, reference: str, content: bytes, origin: Origin) -> None:
        """Tell the endpoints that want pulls that the manifest was sent (content: b"" for a
        HEAD, which lists no references)."""
        tag = None if ":" in reference else reference
        target = self._recorder.target(
            (manifest.repository, manifest.digest, tag),
            lambda: Target(
                manifest.repository,
                manifest.digest,
                manifest.media_type,
                manifest.size,
                tag,
                references=references(content) if self._recorder.include_references else (),
            ),
        )
        self._recorder.pulled(target, origin)

    def pulled_by_tag(self, name: str, reference: str) -> None:
        """Note the pull of a tag (a GET or HEAD), for retention's `keep_pulled_within`."""
        pull_times = self.policies.pull_times
        if pull_times is not None and ":" not in reference:
            pull_times.note(name, reference)

    async def put(
        self,
        name: str,
        reference: str,
        content_type: str | None,
        body: bytes,
        origin: Origin | None = None,
    ) -> PushedManifest:
        """Store a manifest under a tag or its digest. Every blob and child manifest it references
        must be readable in the repository; its subject need not exist (spec: referrers)."""
        if ":" in reference:
            expected = Digest.parse(reference)
            digest = Digest.of(body, expected.algorithm)
            if digest != expected:
                raise DigestInvalid({"expected": str(expected), "actual": str(digest)})
            tag = None
        elif is_tag(reference):
            digest, tag = Digest.of(body), reference
        else:
            raise ManifestInvalid({"reason": "invalid tag", "tag": reference[:200]})
        parsed = parse(body, content_type)
        missing = await self._metadata.missing_references(name, parsed.references)
        if missing:
            raise ManifestBlobUnknown({"digests": missing[:50]})
        description = parsed.description
        if description is None and parsed.config_digest is not None:
            description = await self._config_description(parsed.config_digest, parsed.config_size)
        manifest = Manifest(
            repository=name,
            digest=str(digest),
            media_type=parsed.media_type,
            size=len(body),
            artifact_type=parsed.artifact_type,
            subject=parsed.subject,
            annotations=parsed.annotations,
            description=description,
        )
        quotas = self.policies.quotas
        limits = None if quotas is None else quotas.limits(name)
        immutable = tag is not None and self.policies.immutable.rule_for(name, tag) is not None
        journal = QUIET
        if self._recorder.active:
            target = Target(
                name,
                manifest.digest,
                manifest.media_type,
                manifest.size,
                tag,
                references=references(body) if self._recorder.include_references else (),
            )
            journal = self._recorder.journal(Action.PUSH, target, origin)
        # The bytes are stored where the record can tell that no collector took them away (else
        # under a reservation), and the references checked again where they are recorded, so
        # that garbage collection takes neither away meanwhile.
        try:
            await store(
                self._metadata,
                digest,
                len(body),
                lambda: self._storage.put(keys.blob(digest), body),
                lambda token: self._record(
                    manifest, parsed.references, tag, token, journal, immutable, limits
                ),
                rewritable=True,
            )
        except OverQuota as over:
            assert quotas is not None  # only limits from quotas are checked
            raise quotas.refusal(over) from None
        except Missing as error:
            raise ManifestBlobUnknown({"digests": error.digests[:50]}) from None
        except TagLocked as locked:
            raise self.policies.immutable.refusal(name, locked.tag, "moved") from None
        return PushedManifest(digest, parsed.subject)

    async def _record(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        token: Claim,
        journal: Journal,
        immutable: bool,
        limits: NamespaceLimits | None,
    ) -> None:
        metadata = self._metadata
        try:
            await metadata.put_manifest(
                manifest, references, tag, token, journal, immutable, limits
            )
        except Conflict:
            # The same manifest was stored concurrently; the stored record is identical.
            await metadata.put_manifest(
                manifest, references, tag, token, journal, immutable, limits
            )

    async def _config_description(self, digest: str, size: int) -> str | None:
        """The description label of an image's config blob, read up to CONFIG_READ_MAX bytes."""
        if size > CONFIG_READ_MAX:
            return None
        parts: list[bytes] = []
        try:
            key = keys.blob(Digest.parse(digest))
            async for chunk in self._storage.read(key, 0, CONFIG_READ_MAX + 1):
                parts.append(chunk)
        except NotFound:  # collected since the reference check: the push goes on without it
            return None
        content = b"".join(parts)
        return None if len(content) > CONFIG_READ_MAX else config_description(content)

    async def delete(self, name: str, reference: str, origin: Origin | None = None) -> None:
        """By digest: the manifest and every tag on it. By tag: that tag only (spec v1.1).
        DENIED for an immutable tag, or a manifest one is on."""
        immutable = self.policies.immutable
        if ":" in reference:
            digest = str(Digest.parse(reference))
            journal = self._recorder.journal(Action.DELETE, Target(name, digest), origin)
            protected = immutable.protected(name)
            try:
                found = await self._metadata.delete_manifest(name, digest, journal, protected)
            except TagLocked as locked:
                raise immutable.refusal(name, locked.tag, "deleted") from None
        elif is_tag(reference):
            if immutable.rule_for(name, reference) is not None:
                raise immutable.refusal(name, reference, "deleted")
            journal = self._recorder.journal(Action.DELETE, Target(name, tag=reference), origin)
            found = await self._metadata.delete_tag(name, reference, journal)
        else:
            found = False
        if not found:
            raise ManifestUnknown({"reference": reference[:200]})
