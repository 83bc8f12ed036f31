"""Deleting a whole repository: its tags, manifests and blob links in one transaction; its blobs
go with the next garbage collection, unless other repositories hold them. Refused (DENIED) while
the repository has an immutable tag."""

from __future__ import annotations

from portside.metadata.base import PolicyStore, RepositoryRemoval, TagLocked
from portside.registry.errors import NameUnknown
from portside.registry.events import Action, Origin, Recorder, Target
from portside.registry.immutability import ImmutableTags


class Repositories:
    def __init__(
        self,
        metadata: PolicyStore,
        recorder: Recorder | None = None,
        immutable: ImmutableTags | None = None,
    ) -> None:
        self._metadata = metadata
        self._recorder = recorder or Recorder()
        self._immutable = immutable or ImmutableTags()

    async def delete(self, name: str, origin: Origin | None = None) -> RepositoryRemoval:
        """NameUnknown if there is no such repository."""
        journal = self._recorder.journal(Action.DELETE, Target(name), origin, {"repository": name})
        try:
            removed = await self._metadata.delete_repository(
                name, self._immutable.protected(name), journal
            )
        except TagLocked as locked:
            raise self._immutable.refusal(name, locked.tag, "deleted") from None
        if removed is None:
            raise NameUnknown({"name": name})
        return removed
