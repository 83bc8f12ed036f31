"""The `metrics` section: Prometheus metrics at GET /metrics (the README's "Metrics and health").

    metrics:
        allow: [127.0.0.0/8, ::1/128, 10.1.2.0/24]   # addresses that read it without a login
        users: [prometheus]                           # with `auth`: these users, from anywhere
        listen: 10.1.2.3:9102                         # also a listener of its own

On by default, readable from loopback only.
"""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portside.config.urls import listen_address

LOOPBACK: Final[tuple[IPv4Network | IPv6Network, ...]] = (
    ip_network("127.0.0.0/8"),
    ip_network("::1/128"),
)


def _network(item: object) -> IPv4Network | IPv6Network:
    if isinstance(item, IPv4Network | IPv6Network):
        return item
    if not isinstance(item, str):
        raise ValueError(f"expected a network such as 10.0.0.0/8 or an address, got {item!r}")
    text = item.strip()
    try:
        return ip_network(text)
    except ValueError as exc:
        wider = ""
        with contextlib.suppress(ValueError):
            wider = f" (did you mean {ip_network(text, strict=False)}?)"
        raise ValueError(
            f"expected a network such as 10.0.0.0/8 or an address: {exc}{wider}"
        ) from None


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Count requests, storage and database calls, logins, garbage collection "
        "and the cache's hits, and serve them at GET /metrics; false: none of it.",
    )
    allow: tuple[IPv4Network | IPv6Network, ...] = Field(
        default=LOOPBACK,
        description="Networks (CIDR, or single addresses) whose callers read /metrics on the "
        "main listener without logging in. A request relayed by a proxy (it carries "
        "X-Forwarded-For) counts from the address the proxy names with "
        "trust_forwarded_headers, and never by address without it.",
    )
    users: tuple[str, ...] = Field(
        default=(),
        description="With `auth`: users who read /metrics from any address with their "
        "credentials (Basic, as Prometheus's basic_auth sends them, or a token).",
    )
    groups: tuple[str, ...] = Field(
        default=(), description="With `auth`: groups (auth.access.groups) whose users may too."
    )
    listen: str | None = Field(
        default=None,
        description="HOST:PORT of a listener of its own that serves /metrics to anyone who "
        "reaches it (bind it where only Prometheus does); null: none.",
    )

    @field_validator("allow", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, list | tuple):
            return value
        return tuple(_network(item) for item in value)

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str | None) -> str | None:
        return None if value is None else listen_address(value)

    @property
    def listen_host(self) -> str:
        assert self.listen is not None
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        assert self.listen is not None
        return int(self.listen.rpartition(":")[2])
