"""Visitors of the UI's in-process tests: the users and permissions of the registry with auth,
and logging in through the UI's own form. A library, so no test_ prefix."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from typing import Final

import httpx

PASSWORDS: Final = {"alice": "alice-pw-1", "olga": "olga-pw-2", "admin": "admin-pw-3"}
ACCESS: Final = {
    "anonymous_pull": ["public/*"],
    "groups": {"developers": ["alice"], "operators": ["olga"]},
    "rules": [
        {"repositories": ["team/*"], "groups": ["developers"], "actions": ["pull", "push"]},
        {"repositories": ["ops/*"], "groups": ["operators"], "actions": ["pull", "push", "delete"]},
        {"repositories": ["*"], "users": ["admin"], "actions": ["*"]},
    ],
}
BASE_URL: Final = "http://registry.test"
CSRF_FIELD: Final = re.compile(r'name="csrf" value="([^"]+)"')

Visit = Callable[..., Awaitable[httpx.AsyncClient]]


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found is not None, html
    return found.group(1)


def basic(username: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{PASSWORDS[username]}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


async def log_in(
    client: httpx.AsyncClient, username: str, password: str | None = None
) -> httpx.Response:
    form = await client.get("/ui/login")
    return await client.post(
        "/ui/login",
        data={
            "csrf": csrf_of(form.text),
            "username": username,
            "password": PASSWORDS[username] if password is None else password,
            "next": "/ui/",
        },
    )
