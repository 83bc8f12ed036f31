"""Ids of events and requests, shaped like distribution's (UUIDs) but made for a pull's cost: a
random prefix drawn once per process, then a counter. A fresh prefix per process, also in each
forked worker, keeps them unique across processes and restarts."""

from __future__ import annotations

import itertools
import os
import uuid

_COUNTER_DIGITS = 12  # the UUID's last group: 48 bits of counter


class _Ids:
    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = str(uuid.uuid4())[:-_COUNTER_DIGITS]
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


_ids = _Ids()
# A worker forked after an id was made would otherwise repeat its parent's ids.
os.register_at_fork(after_in_child=_ids.renew)


def next_id() -> str:
    """A new id, unique across processes: 'xxxxxxxx-xxxx-4xxx-yxxx-' then a 12-digit counter."""
    return _ids.next()
