"""The query parameters of the UI's pages, read through api/query.py as the API reads them; a
value that is wrong is a 400 page saying which, never a 500."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from starlette.requests import Request

from portside.api import query
from portside.api.ui.rendering import UiError
from portside.metadata.base import RepositoryOrder, RepositoryRow

PAGE_DEFAULT: Final = 50
PAGE_MAX: Final = 200
TEXT_MAX: Final = 200
KEY_MAX: Final = 300  # a cursor: a name of at most 255 characters, or a time or size and an id


def text(request: Request, field: str, limit: int = TEXT_MAX) -> str | None:
    value = query.one(request.scope, field)
    if value is None:
        return None
    if len(value) > limit or "\x00" in value:
        raise UiError(400, f"The {field} parameter is too long or holds a NUL character.")
    return value


def page_size(request: Request) -> int:
    value = text(request, "n")
    if value is None or value == "":
        return PAGE_DEFAULT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= PAGE_MAX:
        raise UiError(400, f"n must be a number from 1 to {PAGE_MAX}.")
    return int(value)


def order(request: Request) -> RepositoryOrder:
    value = text(request, "sort") or RepositoryOrder.NAME.value
    try:
        return RepositoryOrder(value)
    except ValueError:
        choices = ", ".join(o.value for o in RepositoryOrder)
        raise UiError(400, f"sort must be one of {choices}.") from None


def repository_cursor(request: Request, by: RepositoryOrder) -> RepositoryRow | None:
    """Where a page of repositories starts: after the row that `after` names by its sort key
    (cursor() writes it)."""
    value = text(request, "after", KEY_MAX)
    if not value:
        return None
    if by is RepositoryOrder.NAME:
        return RepositoryRow(0, value, None, 0, None)
    key, _, row_id = value.rpartition("~")
    try:
        if not row_id.isascii() or not row_id.isdigit():
            raise ValueError(row_id)
        if by is RepositoryOrder.SIZE:
            if not key.isascii() or not key.isdigit():
                raise ValueError(key)
            return RepositoryRow(int(row_id), "", None, int(key), None)
        pushed_at = datetime.fromisoformat(key)
        if pushed_at.tzinfo is None:
            raise ValueError(key)
        return RepositoryRow(int(row_id), "", None, 0, pushed_at)
    except ValueError:
        message = "after is not a position in this list: start again from its first page."
        raise UiError(400, message) from None


def cursor(row: RepositoryRow, by: RepositoryOrder) -> str:
    """The `after` of the page that follows row."""
    if by is RepositoryOrder.NAME:
        return row.name
    if by is RepositoryOrder.SIZE:
        return f"{row.size}~{row.id}"
    assert row.pushed_at is not None  # the listing sorted by it leaves out rows without one
    return f"{row.pushed_at.isoformat()}~{row.id}"
