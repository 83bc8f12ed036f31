"""Every route on one screen, each tagged with the OCI distribution spec's endpoint id.

Path convertors match loosely; handlers validate names and digests strictly, so a bad name gets
NAME_INVALID rather than a 404. Order matters: the more specific routes come first.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import BaseRoute, Route

from portside.api import v1
from portside.api.v2 import base, blobs, discovery, manifests, uploads


class RepositoryConvertor(Convertor[str]):
    """A repository name: one or more path segments, checked by the handler."""

    regex = "[^/].*?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("repo", RepositoryConvertor())

NAME = "/v2/{name:repo}"

ROUTES: list[BaseRoute] = [
    Route("/", v1.banner, methods=["GET"]),
    Route("/v1/_ping", v1.ping, methods=["GET"]),
    Route("/v1/search", v1.search, methods=["GET"]),
    Route("/v2/", base.version_check, methods=["GET"]),  # end-1
    Route("/v2/_catalog", discovery.list_catalog, methods=["GET"]),
    Route(f"{NAME}/tags/list", discovery.list_tags, methods=["GET"]),  # end-8a, end-8b
    Route(f"{NAME}/referrers/{{digest}}", discovery.list_referrers, methods=["GET"]),  # end-12
    Route(  # end-3, end-7, end-9
        f"{NAME}/manifests/{{reference}}",
        manifests.get_manifest,
        methods=["GET", "HEAD"],
    ),
    Route(f"{NAME}/manifests/{{reference}}", manifests.put_manifest, methods=["PUT"]),
    Route(f"{NAME}/manifests/{{reference}}", manifests.delete_manifest, methods=["DELETE"]),
    Route(f"{NAME}/blobs/uploads/", uploads.start_upload, methods=["POST"]),  # end-4, end-11
    Route(f"{NAME}/blobs/uploads/{{upload_id}}", uploads.get_upload, methods=["GET"]),  # end-13
    Route(f"{NAME}/blobs/uploads/{{upload_id}}", uploads.patch_upload, methods=["PATCH"]),  # end-5
    Route(f"{NAME}/blobs/uploads/{{upload_id}}", uploads.finish_upload, methods=["PUT"]),  # end-6
    Route(f"{NAME}/blobs/uploads/{{upload_id}}", uploads.cancel_upload, methods=["DELETE"]),
    Route(f"{NAME}/blobs/{{digest}}", blobs.get_blob, methods=["GET", "HEAD"]),  # end-2
    Route(f"{NAME}/blobs/{{digest}}", blobs.delete_blob, methods=["DELETE"]),  # end-10
]
