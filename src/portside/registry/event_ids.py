"""Ids of events and requests, shaped like distribution's (UUIDs) but made for a pull's cost: a
random prefix drawn once per process, then a counter. A fresh prefix per process, also in each
forked worker, keeps them unique across processes and restarts."""

from __future__ import annotations

import os
import threading
import uuid
from typing import Final

_COUNTER_DIGITS = 12  # the UUID's last group: 48 bits of counter
# How an id's counter is written after its prefix (compose; pull events write it so too).
COUNTER_FORMAT: Final = f"0{_COUNTER_DIGITS}x"


class _Ids:
    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        # Ids are made in worker threads too (the collector's): the counter is shared. A fresh
        # lock in a forked child: the parent's may have been held by a thread that is gone.
        self._lock = threading.Lock()
        self.prefix = str(uuid.uuid4())[:-_COUNTER_DIGITS]
        self._next = 0

    def block(self, size: int) -> tuple[str, int]:
        """The prefix and first counter of `size` ids, which no other call gets."""
        with self._lock:
            first = self._next
            self._next = first + size
        return self.prefix, first


_ids = _Ids()
# A worker forked after an id was made would otherwise repeat its parent's ids.
os.register_at_fork(after_in_child=_ids.renew)


def next_id() -> str:
    """A new id, unique across processes: 'xxxxxxxx-xxxx-4xxx-yxxx-' then a 12-digit counter."""
    prefix, number = _ids.block(1)
    return compose(prefix, number)


def id_block(size: int) -> tuple[str, int]:
    """Ids for `size` events at once, as one prefix and the first of their consecutive numbers:
    a batch of pulls stores these two, not each id (compose() makes each)."""
    return _ids.block(size)


def compose(prefix: str, number: int) -> str:
    return f"{prefix}{number:{COUNTER_FORMAT}}"
