"""The UI's pages: repositories (search, sort, pages), a repository's tags, an image, usage.

A repository the visitor may not pull is answered as one that does not exist: a 404 either way,
so that its name tells nobody it is there.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from portside.api import requests
from portside.api.ui import params
from portside.api.ui.rendering import UiError, page, render
from portside.api.ui.visitors import Visitor, ui
from portside.auth.base import DELETE, PULL
from portside.registry.names import Digest

# The largest repositories the usage page lists.
LARGEST = 20
# A raw manifest longer than this is shown cut (manifests may be 4 MiB).
RAW_SHOWN = 256 * 1024


def _hidden(visitor: Visitor, name: str) -> UiError:
    hint = "" if visitor.username is not None else " You may need to log in to see it."
    return UiError(404, f"There is no repository {name} that you can see.{hint}")


@page
async def list_repositories(request: Request) -> Response:
    state = ui(request)
    visitor = await state.visitor(request)
    order = params.order(request)
    text = (params.text(request, "q") or "").strip()
    size = params.page_size(request)
    after = params.repository_cursor(request, order)
    inventory = requests.registry(request).inventory
    found = await inventory.repositories(order, text, after, size, state.visible(visitor))
    context = {
        "title": "Repositories",
        "rows": found.rows,
        "q": text,
        "sort": order.value,
        "n": size if size != params.PAGE_DEFAULT else None,
        "after": after is not None,
        "next": None if found.next_after is None else params.cursor(found.next_after, order),
    }
    # Search as you type (static/ui.js) asks for the results alone.
    partial = params.text(request, "partial") == "1"
    return render(request, visitor, "_results.html" if partial else "repositories.html", context)


@page
async def show_repository(request: Request) -> Response:
    state = ui(request)
    visitor = await state.visitor(request)
    name = requests.name(request)
    if not state.may(visitor, name, PULL):
        raise _hidden(visitor, name)
    after = params.text(request, "after", 128)
    found = await requests.registry(request).inventory.tags(name, after, params.page_size(request))
    context = {
        "title": name,
        "repository": found.repository,
        "tags": found.tags,
        "next": found.next_after,
        "host": urlsplit(state.public.base_url(request)).netloc,
        "may_delete": state.delete_enabled and state.may(visitor, name, DELETE),
        "deleted": params.text(request, "deleted", 200),
    }
    return render(request, visitor, "repository.html", context)


@page
async def show_image(request: Request) -> Response:
    state = ui(request)
    visitor = await state.visitor(request)
    name = requests.name(request)
    digest = Digest.parse(request.path_params["digest"])
    if not state.may(visitor, name, PULL):
        raise _hidden(visitor, name)
    image = await requests.registry(request).inventory.image(name, digest)
    context = {
        "title": f"{name}@{str(digest)[:19]}",
        "name": name,
        "image": image,
        "raw": _raw(image.content),
        "host": urlsplit(state.public.base_url(request)).netloc,
        "may_delete": state.delete_enabled and state.may(visitor, name, DELETE),
    }
    return render(request, visitor, "image.html", context)


def _raw(content: bytes) -> str:
    """The manifest as indented JSON (as pushed, when it is not JSON), cut at RAW_SHOWN."""
    try:
        shown = json.dumps(json.loads(content), indent=2, ensure_ascii=False)
    except (UnicodeDecodeError, ValueError, RecursionError):
        shown = content.decode("utf-8", "replace")
    if len(shown) > RAW_SHOWN:
        return shown[:RAW_SHOWN] + "\n…"
    return shown


@page
async def show_usage(request: Request) -> Response:
    state = ui(request)
    visitor = await state.visitor(request)
    if not state.sees_everything(visitor):
        raise UiError(
            403,
            "Usage adds up the whole registry, so it is shown to those who may pull every "
            "repository. The repository list, sorted by size, shows the ones you can see.",
        )
    usage = await requests.registry(request).inventory.usage(LARGEST)
    removed = []
    if usage.last_collection is not None:
        removed = [row for row in json.loads(usage.last_collection.summary) if row["removed"]]
    context = {"title": "Usage", "usage": usage, "removed": removed}
    return render(request, visitor, "usage.html", context)
