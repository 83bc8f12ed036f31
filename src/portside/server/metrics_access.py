"""Who may read /metrics on the main listener (Need.METRICS): callers from the networks of
`metrics.allow` (loopback by default) without credentials; with `auth`, users of `metrics.users`
or `metrics.groups` from anywhere, with their credentials.

Behind a reverse proxy on the same machine every request comes from loopback, so a request that
names a client in X-Forwarded-For, X-Real-IP or Forwarded is judged by the address the proxy
names (the last of X-Forwarded-For) when trust_forwarded_headers is on, and is never let in by
its address otherwise.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from starlette.types import Scope

from portside.api.credentials import client_address
from portside.auth.base import Identity
from portside.config.metrics import MetricsSettings

PROXY_HEADERS: Final = frozenset({b"x-forwarded-for", b"x-real-ip", b"forwarded"})


class MetricsReaders:
    def __init__(self, settings: MetricsSettings, trust_forwarded_headers: bool) -> None:
        self.networks = settings.allow
        self.users = frozenset(settings.users)
        self.groups = frozenset(settings.groups)
        self.trust_forwarded_headers = trust_forwarded_headers

    def by_address(self, scope: Scope) -> bool:
        if not self.trust_forwarded_headers and any(
            name.lower() in PROXY_HEADERS for name, _ in scope.get("headers", ())
        ):
            return False
        try:
            address: IPv4Address | IPv6Address = ip_address(
                client_address(scope, self.trust_forwarded_headers)
            )
        except ValueError:  # no peer address (a unix socket), or a proxy's garbage
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def by_identity(self, identity: Identity) -> bool:
        return identity.username in self.users or bool(identity.groups & self.groups)
