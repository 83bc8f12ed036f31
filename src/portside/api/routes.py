"""Every route on one screen, each tagged with the OCI distribution spec's endpoint id.

Each route says what it needs of its caller (api/guard.py has the list). Upload status and cancel
need push where distribution asks pull and delete: they act on an upload in progress, which is
part of a push, and a pusher may cancel its own upload.

Path convertors match loosely; handlers validate names and digests strictly, so a bad name gets
NAME_INVALID rather than a 404. Order matters: the more specific routes come first.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import BaseRoute

from portside.api import token, v1
from portside.api.guard import Guarded, Need
from portside.api.v2 import base, blobs, discovery, manifests, uploads


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
GET = ["GET"]

ROUTES: list[BaseRoute] = [
    Guarded("/", v1.banner, GET, OPEN),
    Guarded("/v1/_ping", v1.ping, GET, OPEN),
    Guarded("/v1/search", v1.search, GET, SEARCH),
    Guarded("/v2/", base.version_check, GET, LOGIN),  # end-1
    Guarded("/v2/_catalog", discovery.list_catalog, GET, CATALOG),
    Guarded(f"{NAME}/tags/list", discovery.list_tags, GET, PULL),  # end-8a, end-8b
    Guarded(f"{NAME}/referrers/{{digest}}", discovery.list_referrers, GET, PULL),  # end-12
    Guarded(MANIFEST, manifests.get_manifest, ["GET", "HEAD"], PULL),  # end-3, end-7, end-9
    Guarded(MANIFEST, manifests.put_manifest, ["PUT"], PULL_PUSH),
    Guarded(MANIFEST, manifests.delete_manifest, ["DELETE"], DELETE),
    Guarded(f"{NAME}/blobs/uploads/", uploads.start_upload, ["POST"], MOUNT),  # end-4, end-11
    Guarded(UPLOAD, uploads.get_upload, GET, PULL_PUSH),  # end-13
    Guarded(UPLOAD, uploads.patch_upload, ["PATCH"], PULL_PUSH),  # end-5
    Guarded(UPLOAD, uploads.finish_upload, ["PUT"], PULL_PUSH),  # end-6
    Guarded(UPLOAD, uploads.cancel_upload, ["DELETE"], PULL_PUSH),
    Guarded(BLOB, blobs.get_blob, ["GET", "HEAD"], PULL),  # end-2
    Guarded(BLOB, blobs.delete_blob, ["DELETE"], DELETE),  # end-10
]


def routes(token_path: str | None = None) -> list[BaseRoute]:
    """The route table, led by the built-in token service's endpoint where it is on, at the path
    of its configured realm. It checks the credentials it is given itself."""
    if token_path is None:
        return ROUTES
    return [
        Guarded(token_path, token.get_token, GET, OPEN),
        Guarded(token_path, token.post_token, ["POST"], OPEN),
        *ROUTES,
    ]
