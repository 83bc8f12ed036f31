"""Storing a blob's bytes under a reservation, so that garbage collection cannot delete them
between the write and the record that makes them reachable (registry/gc.py has the argument).

Every writer of `keys.blob(digest)` does, in order: reserve the digest; put the bytes in place
unless the blob is stored already; record the blob with the reservation (metadata's link_blob,
complete_upload or put_manifest), or release it if anything fails before.

A reservation costs one more transaction per blob or manifest pushed, committed without waiting
for the disk: a power cut ends the writers it protects, and bytes one had moved into place are
then bytes without a record, which a collection removes after the grace period. A writer that
can write the bytes again (they are in memory) saves it: registry/ingest.py's `store`, with
`rewritable`, records them without one first (metadata.base.Unreserved).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from portside.metadata.base import MARK_TTL, RequestStore, Reservation
from portside.registry.errors import TooManyRequests
from portside.registry.names import Digest

# A collector deletes a marked blob's bytes in moments; one that died leaves its mark to go
# stale after MARK_TTL, when the writer takes the blob over. Wait that long, and a little more.
BUSY_WAIT: Final = MARK_TTL.total_seconds() + 10
BUSY_POLL: Final = 0.05


@dataclass(frozen=True, slots=True)
class Reserved:
    token: str
    stored: bool  # the bytes are in place already: nothing to write


@asynccontextmanager
async def reserved(
    metadata: RequestStore,
    digest: Digest,
    size: int,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[Reserved]:
    """A reservation of digest for the block's writes, released if the block raises (once the
    block has recorded the blob, releasing is a no-op). While a collector is deleting the
    blob's bytes, wait until it is done; TooManyRequests if that takes longer than BUSY_WAIT."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + BUSY_WAIT
    while (found := await metadata.reserve_blob(str(digest), size, token)) is Reservation.BUSY:
        if time.monotonic() > deadline:
            raise TooManyRequests(
                {"digest": str(digest), "reason": "being garbage collected"}, retry_after=5
            )
        await sleep(BUSY_POLL)
    try:
        yield Reserved(token, stored=found is Reservation.STORED)
    except BaseException:
        await asyncio.shield(metadata.release_blob(token))
        raise
