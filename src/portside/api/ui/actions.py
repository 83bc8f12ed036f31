"""Deleting a tag, a manifest or a whole repository (no reference) from the web UI: a
confirmation page (GET), then the form it holds (POST, with the CSRF token), for visitors with
delete permission on the repository where `delete_enabled` allows it. The deletion is the API's
own (ManifestStore.delete, Repositories.delete): the same events, audit entries and policies,
with the visitor's name."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from portside.api import requests
from portside.api.origins import change_origin
from portside.api.ui import params
from portside.api.ui.forms import field, read_form
from portside.api.ui.rendering import UiError, page, redirect, render
from portside.api.ui.visitors import Visitor, ui
from portside.auth.base import DELETE, PULL
from portside.registry.names import Digest, is_tag, parse_name


def _target(request: Request, visitor: Visitor, name: str, reference: str) -> tuple[str, str]:
    """The repository and reference to delete (a tag, or a digest, normalized), once the
    visitor is allowed to; a 400, 403 or 404 page otherwise."""
    state = ui(request)
    name = parse_name(name)
    if reference and not is_tag(reference):
        reference = str(Digest.parse(reference))
    if not state.may(visitor, name, PULL) and not state.may(visitor, name, DELETE):
        raise UiError(404, f"There is no repository {name} that you can see.")
    if not state.delete_enabled:
        raise UiError(403, "Deleting is turned off on this registry (delete_enabled: false).")
    if not state.may(visitor, name, DELETE):
        raise UiError(403, f"Your account may not delete in {name}.")
    return name, reference


@page
async def confirm_delete(request: Request) -> Response:
    visitor = await ui(request).visitor(request)
    name, reference = _target(
        request,
        visitor,
        params.text(request, "repository", 300) or "",
        params.text(request, "reference", 300) or "",
    )
    tags = []
    if reference and not is_tag(reference):
        tags = (
            await requests.registry(request).inventory.image(name, Digest.parse(reference))
        ).tags
    context = {"title": "Delete?", "name": name, "reference": reference, "tags": tags}
    return render(request, visitor, "confirm_delete.html", context)


@page
async def delete(request: Request) -> Response:
    visitor = await ui(request).visitor(request)
    form = await read_form(request, visitor)
    reference = field(form, "reference", 300) if form.get("reference") else ""  # "": all
    name, reference = _target(request, visitor, field(form, "repository", 300), reference)
    registry = requests.registry(request)
    if not reference:
        await registry.repositories.delete(name, change_origin(request))
        return redirect("/ui/")
    await registry.manifests.delete(name, reference, change_origin(request))
    if not await registry.inventory.holds(name):  # its last manifest went
        return redirect("/ui/")
    return redirect(f"/ui/repositories/{name}?" + urlencode({"deleted": reference}))
