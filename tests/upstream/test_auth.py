"""Authentication to upstreams: Basic against distribution behind htpasswd, Bearer against
Portside's token service (tokens cached per scope until shortly before they expire), and the
realm rule: credentials go to a token realm only on the upstream's own origin or an allowed host
(CVE-2026-33540)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from e2e.server import PortsideServer
from portside.upstream import UpstreamDenied, UpstreamInvalid
from portside.upstream.challenges import Challenge, parse_challenges
from portside.upstream.tokens import may_send_credentials

from .conftest import PULLER, TOKEN_LIFETIME, UpstreamFactory, pusher_client
from .fake import FakeServer, Reply, Request
from .registries import Distribution, digest_of, push_image

# Basic auth -------------------------------------------------------------------------------------


async def test_basic_auth_with_the_configured_credentials(
    make_upstream: UpstreamFactory, distribution_htpasswd: Distribution
) -> None:
    with httpx.Client(base_url=distribution_htpasswd.url, auth=distribution_htpasswd.auth) as c:
        image = push_image(c, "private/app", "v1")
    user, secret = distribution_htpasswd.auth or ("", "")
    upstream = make_upstream(distribution_htpasswd.url, username=user, password=secret)
    manifest = await upstream.get_manifest("private/app", "v1")
    assert manifest.content == image.manifest
    async with upstream.open_blob("private/app", image.layer_digests[0]) as blob:
        assert b"".join([chunk async for chunk in blob]) == image.layers[0]


async def test_basic_auth_without_or_with_wrong_credentials_is_denied(
    make_upstream: UpstreamFactory, distribution_htpasswd: Distribution
) -> None:
    anonymous = make_upstream(distribution_htpasswd.url)
    with pytest.raises(UpstreamDenied, match="basic"):
        await anonymous.head_manifest("private/app", "v1")
    wrong = make_upstream(distribution_htpasswd.url, username="puller", password="wrong")
    with pytest.raises(UpstreamDenied, match="401"):
        await wrong.head_manifest("private/app", "v1")
    assert wrong.available, "a refusal is an answer: the circuit stays closed"


# Bearer tokens from Portside's token service ---------------------------------------------------


def token_requests(server: PortsideServer) -> int:
    return sum(1 for line in server.access_lines() if line.path.startswith("/auth/token"))


async def test_bearer_tokens_are_fetched_once_per_scope_and_again_when_expiring(
    make_upstream: UpstreamFactory, portside_token: PortsideServer
) -> None:
    for repository in ("bearer/one", "bearer/two"):
        with pusher_client(portside_token, repository) as client:
            image = push_image(client, repository, "v1")
    now = [1000.0]
    upstream = make_upstream(
        portside_token.url, username=PULLER[0], password=PULLER[1], clock=lambda: now[0]
    )
    before = token_requests(portside_token)

    info = await upstream.head_manifest("bearer/two", "v1")
    manifest = await upstream.get_manifest("bearer/two", info.digest)
    async with upstream.open_blob("bearer/two", image.layer_digests[0]) as blob:
        assert b"".join([chunk async for chunk in blob]) == image.layers[0]
    assert await upstream.tags("bearer/two") == ["v1"]
    assert manifest.content == image.manifest
    assert token_requests(portside_token) - before == 1, "one token for repository:bearer/two"

    await upstream.head_manifest("bearer/one", "v1")
    assert token_requests(portside_token) - before == 2, "another scope, another token"

    now[0] += TOKEN_LIFETIME - 15
    await upstream.head_manifest("bearer/two", "v1")
    assert token_requests(portside_token) - before == 2, "still well within its lifetime"

    now[0] += 10  # now too close to its end to be sent
    await upstream.head_manifest("bearer/two", "v1")
    assert token_requests(portside_token) - before == 3
    assert "Puller-Secret" not in portside_token.log_text()


async def test_bearer_with_wrong_credentials_is_denied(
    make_upstream: UpstreamFactory, portside_token: PortsideServer
) -> None:
    upstream = make_upstream(portside_token.url, username=PULLER[0], password="wrong")
    with pytest.raises(UpstreamDenied, match="401"):
        await upstream.head_manifest("bearer/one", "v1")


async def test_an_anonymous_token_without_pull_access_is_denied(
    make_upstream: UpstreamFactory, portside_token: PortsideServer
) -> None:
    with pusher_client(portside_token, "bearer/three") as client:
        push_image(client, "bearer/three", "v1")
    upstream = make_upstream(portside_token.url)
    with pytest.raises(UpstreamDenied):
        await upstream.head_manifest("bearer/three", "v1")


# Realms on other hosts --------------------------------------------------------------------------

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class TokenRealm:
    """A token service on its own port, recording the Authorization headers it receives."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []

    async def __call__(self, request: Request) -> Reply:
        self.authorizations.append(request.headers.get("authorization"))
        body = json.dumps({"access_token": "realm-token", "expires_in": 120}).encode()
        return Reply(200, {"Content-Type": "application/json"}, body)


def registry_with_realm(realm: str) -> FakeServer:
    """A registry that sends every client without the realm's token to `realm`."""

    async def handle(request: Request) -> Reply:
        if request.headers.get("authorization") != "Bearer realm-token":
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:app:pull"'
            return Reply(401, {"WWW-Authenticate": challenge})
        headers = {"Content-Type": MEDIA_TYPE, "Docker-Content-Digest": digest_of(MANIFEST)}
        return Reply(200, headers, MANIFEST)

    return FakeServer(handle)


async def test_a_realm_on_another_port_gets_no_credentials(
    make_upstream: UpstreamFactory,
) -> None:
    realm = TokenRealm()
    async with FakeServer(realm) as evil, registry_with_realm(f"{evil.url}/token") as registry:
        upstream = make_upstream(registry.url, username="user", password="Secret-9")
        manifest = await upstream.get_manifest("app", "latest")
    assert manifest.content == MANIFEST
    assert realm.authorizations == [None], "the token was asked for anonymously"
    assert evil.requests[0].target.startswith("/token?service=fake&scope=repository")
    assert "Secret-9" not in evil.requests[0].target


async def test_an_allowed_realm_host_gets_the_credentials(
    make_upstream: UpstreamFactory,
) -> None:
    realm = TokenRealm()
    async with FakeServer(realm) as auth, registry_with_realm(f"{auth.url}/token") as registry:
        allowed = [f"127.0.0.1:{auth.port}"]
        upstream = make_upstream(
            registry.url, username="user", password="Secret-9", allowed_realm_hosts=allowed
        )
        await upstream.get_manifest("app", "latest")
    assert realm.authorizations == [basic("user", "Secret-9")]


@pytest.mark.parametrize("realm", ["file:///etc/passwd", "ftp://127.0.0.1/token", "", "/token"])
async def test_a_realm_that_is_not_an_http_url_is_invalid(
    make_upstream: UpstreamFactory, realm: str
) -> None:
    async with registry_with_realm(realm) as registry:
        upstream = make_upstream(registry.url, username="user", password="Secret-9")
        with pytest.raises(UpstreamInvalid, match="realm"):
            await upstream.head_manifest("app", "latest")


@pytest.mark.parametrize(
    ("realm", "upstream", "allowed", "sent"),
    [
        ("https://r.example/token", "https://r.example", (), True),
        ("https://r.example:443/token", "https://r.example", (), True),
        ("https://r.example:8443/token", "https://r.example", (), False),
        ("http://r.example/token", "https://r.example", (), False),
        ("https://evil.example/token", "https://r.example", (), False),
        ("https://auth.docker.io/token", "https://registry-1.docker.io", ["auth.docker.io"], True),
        ("http://auth.docker.io/token", "https://registry-1.docker.io", ["auth.docker.io"], False),
        (
            "https://auth.docker.io:8443/t",
            "https://registry-1.docker.io",
            ["auth.docker.io"],
            False,
        ),
        ("http://a.test:81/token", "http://r.test", ["a.test:81"], True),
    ],
)
def test_which_realms_may_see_the_credentials(
    realm: str, upstream: str, allowed: list[str], sent: bool
) -> None:
    assert may_send_credentials(httpx.URL(realm), httpx.URL(upstream), allowed) is sent


def test_challenges_are_parsed_with_quoted_values_and_several_schemes() -> None:
    header = 'Basic realm="a, b", Bearer realm="https://x/t?a=1",service=reg,error="say \\"no\\""'
    assert parse_challenges([header]) == [
        Challenge("basic", {"realm": "a, b"}),
        Challenge("bearer", {"realm": "https://x/t?a=1", "service": "reg", "error": 'say "no"'}),
    ]
