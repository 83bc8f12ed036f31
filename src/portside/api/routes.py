"""Every route on one screen, each tagged with the OCI distribution spec's endpoint id.

Each route says what it needs of its caller (api/guard.py has the list). Upload status and cancel
need push where distribution asks pull and delete: they act on an upload in progress, which is
part of a push, and a pusher may cancel its own upload.

Each route is named for the `handler` label of the HTTP metrics: distribution's route names
(base, manifest, tags, blob, blob_upload, blob_upload_chunk, catalog) and Portside's own.

Path convertors match loosely; handlers validate names and digests strictly, so a bad name gets
NAME_INVALID rather than a 404. Order matters: the more specific routes come first.
"""

from __future__ import annotations

from typing import Final

from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import BaseRoute

from portside.api import health, metrics, token, v1
from portside.api.guard import Guarded, Need
from portside.api.ui import routes as ui_routes
from portside.api.v2 import base, blobs, discovery, manifests, repositories, uploads


class RepositoryConvertor(Convertor[str]):
    """A repository name: one or more path segments, checked by the handler."""

    regex = "[^/].*?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("repo", RepositoryConvertor())

OPEN, SEARCH, LOGIN, CATALOG = Need.OPEN, Need.SEARCH, Need.LOGIN, Need.CATALOG
PULL, PULL_PUSH, MOUNT, DELETE = Need.PULL, Need.PULL_PUSH, Need.MOUNT, Need.DELETE

NAME = "/v2/{name:repo}"
MANIFEST = f"{NAME}/manifests/{{reference}}"
UPLOAD = f"{NAME}/blobs/uploads/{{upload_id}}"
BLOB = f"{NAME}/blobs/{{digest}}"
REFERRERS = f"{NAME}/referrers/{{digest}}"
GET = ["GET"]
HEAD_GET = ["GET", "HEAD"]

ROUTES: list[BaseRoute] = [
    Guarded("/", v1.banner, GET, OPEN, "banner"),
    Guarded("/v1/_ping", v1.ping, GET, OPEN, "ping"),
    Guarded("/v1/search", v1.search, GET, SEARCH, "search"),
    Guarded("/v2/", base.version_check, GET, LOGIN, "base"),  # end-1
    Guarded("/v2/_catalog", discovery.list_catalog, GET, CATALOG, "catalog"),
    # Portside's own: a whole repository's deletion (api/v2/repositories.py).
    Guarded(
        "/v2/_portside/repositories/{name:repo}",
        repositories.delete_repository,
        ["DELETE"],
        DELETE,
        "repository",
    ),
    Guarded(f"{NAME}/tags/list", discovery.list_tags, GET, PULL, "tags"),  # end-8a, end-8b
    Guarded(REFERRERS, discovery.list_referrers, GET, PULL, "referrers"),  # end-12
    Guarded(MANIFEST, manifests.get_manifest, HEAD_GET, PULL, "manifest"),  # end-3, end-7, end-9
    Guarded(MANIFEST, manifests.put_manifest, ["PUT"], PULL_PUSH, "manifest"),
    Guarded(MANIFEST, manifests.delete_manifest, ["DELETE"], DELETE, "manifest"),
    Guarded(f"{NAME}/blobs/uploads/", uploads.start_upload, ["POST"], MOUNT, "blob_upload"),
    Guarded(UPLOAD, uploads.get_upload, GET, PULL_PUSH, "blob_upload_chunk"),  # end-13
    Guarded(UPLOAD, uploads.patch_upload, ["PATCH"], PULL_PUSH, "blob_upload_chunk"),  # end-5
    Guarded(UPLOAD, uploads.finish_upload, ["PUT"], PULL_PUSH, "blob_upload_chunk"),  # end-6
    Guarded(UPLOAD, uploads.cancel_upload, ["DELETE"], PULL_PUSH, "blob_upload_chunk"),
    Guarded(BLOB, blobs.get_blob, HEAD_GET, PULL, "blob"),  # end-2
    Guarded(BLOB, blobs.delete_blob, ["DELETE"], DELETE, "blob"),  # end-10
    # Health (api/health.py): for load balancers and monitors, never behind credentials.
    Guarded("/debug/health", health.debug_health, GET, OPEN, "health"),
    Guarded("/livez", health.livez, GET, OPEN, "livez"),
    Guarded("/readyz", health.readyz, GET, OPEN, "readyz"),
]
METRICS_ROUTE: Final = Guarded("/metrics", metrics.get_metrics, GET, Need.METRICS, "metrics")


def routes(
    token_path: str | None = None, metrics: bool = False, ui: bool = False
) -> list[BaseRoute]:
    """The route table, led by the built-in token service's endpoint where it is on, at the path
    of its configured realm (it checks the credentials it is given itself); with metrics,
    /metrics; with ui, the web UI's routes under /ui/ (api/ui/routes.py) last."""
    table = [*ROUTES, METRICS_ROUTE] if metrics else ROUTES
    if ui:
        table = [*table, *ui_routes.routes()]
    if token_path is None:
        return table
    return [
        Guarded(token_path, token.get_token, GET, OPEN, "token"),
        Guarded(token_path, token.post_token, ["POST"], OPEN, "token"),
        *table,
    ]
