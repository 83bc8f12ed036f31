"""The pull-through cache's wiring: upstream clients from the `mirroring` section, and the `?ns=`
parameter containerd and podman send, which names the registry a request is meant for.

    GET /v2/library/alpine/manifests/3.20?ns=docker.io   is served as   /v2/hub/library/alpine/...

when the upstream mounted at `hub/` is Docker Hub: the path is rewritten before anything reads it,
so that the permission check and the handler see the same repository.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from portside.api import query
from portside.config.mirroring import MirroringSettings, UpstreamSettings
from portside.registry.errors import RegistryError
from portside.registry.mirror import UpstreamRoute
from portside.server.errors import error_response
from portside.upstream.client import Upstream

V2: Final = "/v2/"


def upstream_routes(settings: MirroringSettings | None) -> list[UpstreamRoute]:
    """The upstreams of the `mirroring` section, each with its client; none without one."""
    if settings is None or not settings.enabled:
        return []
    return [
        UpstreamRoute(
            prefix,
            _client(settings, upstream),
            merged=upstream.merged,
            ttl=upstream.tags_cache_ttl or settings.tags_cache_ttl,
        )
        for prefix, upstream in settings.all_upstreams().items()
    ]


def _client(settings: MirroringSettings, upstream: UpstreamSettings) -> Upstream:
    return Upstream(
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        connect_timeout=settings.connect_timeout.total_seconds(),
        read_timeout=settings.read_timeout.total_seconds(),
        ca_file=None if upstream.ca_file is None else str(upstream.ca_file),
        allowed_realm_hosts=upstream.token_realm_hosts,
        failure_threshold=settings.failure_threshold,
        open_seconds=settings.retry_after.total_seconds(),
    )


class NamespaceMiddleware:
    """Serves `/v2/<name>/...?ns=<registry>` as the repository of the upstream that registry
    names: `<prefix>/<name>`, or `<name>` itself for the root upstream. An `ns` no upstream
    serves changes nothing (this registry's own content, as distribution does)."""

    def __init__(self, app: ASGIApp, settings: MirroringSettings) -> None:
        self.app = app
        self.upstreams = settings.all_upstreams()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(V2):
            try:
                registry = query.one(scope, "ns")
            except RegistryError as error:
                await error_response(error)(scope, receive, send)
                return
            prefix = self._prefix(registry) if registry else None
            if prefix:
                rest = scope["path"][len(V2) :]
                # Not /v2/ itself nor /v2/_catalog, and not a name already under the prefix.
                if rest and not rest.startswith(("_", f"{prefix}/")):
                    path = f"{V2}{prefix}/{rest}"
                    scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)

    def _prefix(self, registry: str) -> str | None:
        for prefix, upstream in self.upstreams.items():
            if upstream.serves(registry):
                return prefix or None  # the root upstream serves names as they are
        return None
