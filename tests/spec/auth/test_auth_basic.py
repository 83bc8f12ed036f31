"""Basic auth from an htpasswd file: challenges, every htpasswd format, the permissions table,
refusals that change nothing, failed-login limits, filtered listings, mounts, and the cache that
spares bcrypt on repeated requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from auth_setup import (
    PASSWORDS,
    Registry,
    RegistryFactory,
    auth_section,
    basic,
    write_htpasswd,
)
from helpers import (
    assert_error,
    digest_of,
    push_blob,
    push_image,
    random_bytes,
    start_upload,
)

from portside.auth import authenticator
from portside.auth.htpasswd import HtpasswdFile, Scheme, add_user, remove_user, set_password

CHALLENGE = 'Basic realm="Portside registry"'


def assert_challenge(response: httpx.Response, challenge: str = CHALLENGE) -> None:
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == challenge


# Challenges and logins -----------------------------------------------------------------------


async def test_version_check_without_credentials_is_401_with_basic_challenge(
    registry: Registry,
) -> None:
    """spec end-1: 401 with WWW-Authenticate when auth is on; the API version header too."""
    response = await registry.client.get("/v2/")
    assert_challenge(response)
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_version_check_with_credentials_is_200(registry: Registry) -> None:
    response = await registry.client.get("/v2/", headers=basic("dave"))
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize(
    "header",
    [
        basic("alice", "wrong"),
        basic("alice", ""),
        basic("nobody", "alice-Secret-1"),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + "YWxpY2U="},  # "alice", no colon
        {"Authorization": "Digest username=alice"},
        {"Authorization": "Bearer some.jwt.here"},  # no token issuer in Basic mode
    ],
    ids=["wrong", "empty", "unknown-user", "not-base64", "no-colon", "other-scheme", "bearer"],
)
async def test_bad_credentials_are_401_with_the_challenge(
    registry: Registry, header: dict[str, str]
) -> None:
    assert_challenge(await registry.client.get("/v2/", headers=header))
    assert_challenge(await registry.client.get("/v2/public/x/tags/list", headers=header))


async def test_an_empty_username_and_password_count_as_no_credentials(registry: Registry) -> None:
    """podman and skopeo send `Basic Og==` (":") when they have no credentials."""
    empty = {"Authorization": "Basic Og=="}
    assert (await registry.client.get("/v2/public/x/tags/list", headers=empty)).status_code == 404
    assert_challenge(await registry.client.get("/v2/team/x/tags/list", headers=empty))


@pytest.mark.parametrize("scheme", [s for s in Scheme if s is not Scheme.PLAIN])
async def test_every_htpasswd_format_logs_in(
    make_registry: RegistryFactory, tmp_path: Path, scheme: Scheme
) -> None:
    path = write_htpasswd(tmp_path / "htpasswd", {"user": "pässword-1"}, scheme)
    registry = await make_registry(auth_section(path))

    ok = await registry.client.get("/v2/", auth=("user", "pässword-1"))
    # DES crypt reads 8 bytes only: differ within them.
    wrong = await registry.client.get("/v2/", auth=("user", "passwort-1"))

    assert ok.status_code == 200, (scheme, ok.text)
    assert_challenge(wrong)


async def test_plaintext_entries_work_only_when_allowed(
    make_registry: RegistryFactory, tmp_path: Path
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("plain:clear-text-password\n")

    refused = await make_registry(auth_section(path))
    allowed = await make_registry(
        auth_section(path) | {"htpasswd": {"path": str(path), "allow_plaintext": True}}
    )

    assert_challenge(await refused.client.get("/v2/", auth=("plain", "clear-text-password")))
    assert (
        await allowed.client.get("/v2/", auth=("plain", "clear-text-password"))
    ).status_code == 200


async def test_the_htpasswd_file_is_read_again_when_it_changes(
    registry: Registry, htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authenticator, "FILE_CHECK_SECONDS", 0)  # look at the file on every request
    assert_challenge(await registry.client.get("/v2/", auth=("erin", "erin-Secret-6")))
    add_user(htpasswd, "erin", "erin-Secret-6", rounds=4)
    assert (await registry.client.get("/v2/", auth=("erin", "erin-Secret-6"))).status_code == 200
    remove_user(htpasswd, "erin")
    assert_challenge(await registry.client.get("/v2/", auth=("erin", "erin-Secret-6")))


async def test_a_changed_password_is_refused_once_the_file_is_looked_at(
    registry: Registry, htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However recently the old password was verified (and cached). The gate looks at the file
    every FILE_CHECK_SECONDS; here on every request."""
    monkeypatch.setattr(authenticator, "FILE_CHECK_SECONDS", 0)
    alice = await registry.as_user("alice")
    assert (await alice.get("/v2/")).status_code == 200
    set_password(htpasswd, "alice", "alice-New-Secret", rounds=4)

    assert_challenge(await alice.get("/v2/"))
    assert (
        await registry.client.get("/v2/", auth=("alice", "alice-New-Secret"))
    ).status_code == 200


async def test_the_realm_follows_the_setting(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    section = auth_section(htpasswd) | {"htpasswd": {"path": str(htpasswd), "realm": 'Our "lab"'}}
    registry = await make_registry(section)
    assert_challenge(await registry.client.get("/v2/"), 'Basic realm="Our \\"lab\\""')


@pytest.mark.parametrize("path", ["/", "/v1/_ping", "/v1/search?q=public"])
async def test_classic_endpoints_answer_without_credentials(registry: Registry, path: str) -> None:
    await push_repositories(registry)
    response = await registry.client.get(path)
    assert response.status_code == 200


async def test_unknown_paths_are_still_404(registry: Registry) -> None:
    response = await registry.client.get("/nowhere")
    assert_error(response, 404, "UNSUPPORTED")


# The permissions table -----------------------------------------------------------------------

PULL, PUSH, DELETE = "pull", "push", "delete"

# (who, action, repository, expected status); who None is anonymous.
PERMISSIONS = [
    (None, PULL, "public/app", 200),
    (None, PULL, "team/app", 401),
    (None, PUSH, "public/app", 401),
    (None, DELETE, "public/app", 401),
    ("dave", PULL, "public/app", 200),
    ("dave", PULL, "team/app", 403),
    ("dave", PUSH, "public/app", 403),
    ("alice", PULL, "team/app", 200),
    ("alice", PUSH, "team/app", 202),
    ("alice", DELETE, "team/app", 403),
    ("bob", PUSH, "team/app", 202),
    ("carol", PULL, "team/app", 200),
    ("carol", PUSH, "team/app", 403),
    ("alice", PUSH, "alice/app", 202),
    ("alice", DELETE, "alice/app", 202),
    ("bob", PULL, "alice/app", 403),
    ("alice", PULL, "other/app", 403),
    ("admin", PUSH, "other/app", 202),
    ("admin", DELETE, "team/app", 202),
]


async def attempt(client: httpx.AsyncClient, action: str, name: str, digest: str) -> int:
    if action == PULL:
        response = await client.get(f"/v2/{name}/manifests/{digest}")
    elif action == PUSH:
        response = await client.post(f"/v2/{name}/blobs/uploads/")
    else:
        response = await client.delete(f"/v2/{name}/manifests/{digest}")
    if response.status_code == 401:
        assert_challenge(response)
    if response.status_code == 403:
        assert_error(response, 403, "DENIED")
        # As distribution: every action the request needs (a push needs pull and push).
        actions = [PULL, PUSH] if action == PUSH else [action]
        assert response.json()["errors"][0]["detail"] == [
            {"Type": "repository", "Name": name, "Action": needed} for needed in actions
        ]
    return response.status_code


@pytest.mark.parametrize(("who", "action", "name", "expected"), PERMISSIONS)
async def test_permissions(
    registry: Registry, who: str | None, action: str, name: str, expected: int
) -> None:
    admin = await registry.as_user("admin")
    pushed = await push_image(admin, name, "v1", layers=1)
    client = registry.client if who is None else await registry.as_user(who)

    assert await attempt(client, action, name, pushed.digest) == expected


async def test_an_unauthenticated_challenge_names_no_scope_in_basic_mode(
    registry: Registry,
) -> None:
    response = await registry.client.post("/v2/team/app/blobs/uploads/")
    assert_challenge(response)
    assert response.json()["errors"][0]["detail"] == [
        {"Type": "repository", "Name": "team/app", "Action": "pull"},
        {"Type": "repository", "Name": "team/app", "Action": "push"},
    ]


# Refusals change nothing ----------------------------------------------------------------------


async def test_a_push_with_a_wrong_password_stores_nothing(registry: Registry) -> None:
    data = random_bytes(256)
    digest = digest_of(data)
    response = await registry.client.post(
        "/v2/team/app/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers=basic("alice", "wrong"),
    )
    assert_challenge(response)

    admin = await registry.as_user("admin")
    assert (await admin.head(f"/v2/team/app/blobs/{digest}")).status_code == 404


async def test_a_manifest_push_without_credentials_stores_nothing(registry: Registry) -> None:
    admin = await registry.as_user("admin")
    pushed = await push_image(admin, "team/app", "v1", layers=1)
    await admin.delete(f"/v2/team/app/manifests/{pushed.digest}")

    response = await registry.client.put(
        "/v2/team/app/manifests/v2",
        content=pushed.body,
        headers={"Content-Type": pushed.media_type},
    )

    assert_challenge(response)
    assert (await admin.get("/v2/team/app/manifests/v2")).status_code == 404
    assert (await admin.get(f"/v2/team/app/manifests/{pushed.digest}")).status_code == 404


async def test_a_pull_only_user_cannot_push_a_manifest_or_a_blob(registry: Registry) -> None:
    admin = await registry.as_user("admin")
    carol = await registry.as_user("carol")
    pushed = await push_image(admin, "team/app", "v1", layers=1)
    data = random_bytes(64)

    blob = await carol.post(
        "/v2/team/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data
    )
    manifest = await carol.put(
        "/v2/team/app/manifests/v2",
        content=pushed.body,
        headers={"Content-Type": pushed.media_type},
    )
    delete = await carol.delete(f"/v2/team/app/manifests/{pushed.digest}")

    for response in (blob, manifest, delete):
        assert_error(response, 403, "DENIED")
    assert (await admin.head(f"/v2/team/app/blobs/{digest_of(data)}")).status_code == 404
    assert (await admin.get("/v2/team/app/manifests/v2")).status_code == 404
    assert (await admin.get(f"/v2/team/app/manifests/{pushed.digest}")).status_code == 200


# Failed-login limits ----------------------------------------------------------------------------


async def test_failed_logins_are_limited_with_429_and_retry_after(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(
        auth_section(htpasswd, login_limit={"failures": 3, "window_seconds": 60})
    )
    alice = await registry.as_user("alice")
    assert (await alice.get("/v2/")).status_code == 200  # verified and cached before the attack

    for _ in range(3):
        assert_challenge(await registry.client.get("/v2/", headers=basic("bob", "guess")))
    throttled = await registry.client.get("/v2/", headers=basic("bob", "guess"))
    right_password = await registry.client.get("/v2/", headers=basic("bob"))
    other_user = await registry.client.get("/v2/", headers=basic("carol"))

    for response in (throttled, right_password, other_user):  # the address is throttled
        assert_error(response, 429, "TOOMANYREQUESTS")
        assert 0 < int(response.headers["retry-after"]) <= 60
    # A login this worker already verified costs no hash and guesses nothing: it goes on.
    assert (await alice.get("/v2/")).status_code == 200


# Listings -----------------------------------------------------------------------------------

REPOSITORIES = ["alice/own", "other/secret", "public/base", "team/app"]


async def push_repositories(registry: Registry) -> None:
    admin = await registry.as_user("admin")
    for name in REPOSITORIES:
        await push_image(admin, name, "v1", layers=0)


@pytest.mark.parametrize(
    ("who", "shown"),
    [
        ("alice", ["alice/own", "public/base", "team/app"]),
        ("carol", ["public/base", "team/app"]),
        ("dave", ["public/base"]),
        ("admin", REPOSITORIES),
    ],
)
async def test_the_catalog_shows_only_what_the_caller_may_pull(
    registry: Registry, who: str, shown: list[str]
) -> None:
    await push_repositories(registry)
    client = await registry.as_user(who)

    everything = await client.get("/v2/_catalog")
    paged = await client.get("/v2/_catalog", params={"n": 1})

    assert everything.json() == {"repositories": shown}
    assert paged.json() == {"repositories": shown[:1]}
    if len(shown) > 1:
        assert f"last={shown[0].replace('/', '%2F')}" in paged.headers["link"]


async def test_the_catalog_needs_a_login_unless_it_is_open_to_anonymous(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    closed = await make_registry(auth_section(htpasswd))
    access = auth_section(htpasswd)["access"] | {"catalog": {"anonymous": True}}
    opened = await make_registry(auth_section(htpasswd, access=access))
    await push_repositories(opened)

    assert_challenge(await closed.client.get("/v2/_catalog"))
    assert (await opened.client.get("/v2/_catalog")).json() == {"repositories": ["public/base"]}


async def test_the_catalog_is_denied_to_users_the_config_leaves_out(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    access = auth_section(htpasswd)["access"] | {
        "catalog": {"authenticated": False, "groups": ["developers"]}
    }
    registry = await make_registry(auth_section(htpasswd, access=access))

    alice = await (await registry.as_user("alice")).get("/v2/_catalog")
    carol = await (await registry.as_user("carol")).get("/v2/_catalog")

    assert alice.status_code == 200
    assert_error(carol, 403, "DENIED")


async def test_search_shows_only_what_the_caller_may_pull(registry: Registry) -> None:
    await push_repositories(registry)

    anonymous = await registry.client.get("/v1/search", params={"q": ""})
    carol = await (await registry.as_user("carol")).get("/v1/search", params={"q": ""})

    assert [r["name"] for r in anonymous.json()["results"]] == ["public/base"]
    assert anonymous.json()["num_results"] == 1
    assert [r["name"] for r in carol.json()["results"]] == ["public/base", "team/app"]


async def test_an_anonymous_search_that_shows_nothing_asks_for_a_login(
    registry: Registry,
) -> None:
    """podman sends /v1/search without credentials and falls back to the authenticated
    /v2/_catalog only when it is not a 200: a 401 where an anonymous caller sees nothing is what
    lets `podman search` after `podman login` show the user's repositories. It says nothing of
    what exists: public/base matches, and the anonymous search for it is still a 200."""
    await push_repositories(registry)

    private = await registry.client.get("/v1/search", params={"q": "team"})
    nothing = await registry.client.get("/v1/search", params={"q": "no-such-thing"})
    public = await registry.client.get("/v1/search", params={"q": "public"})
    carol = await (await registry.as_user("carol")).get("/v1/search", params={"q": "team"})

    assert_challenge(private)
    assert_challenge(nothing)
    assert public.status_code == 200
    assert [r["name"] for r in carol.json()["results"]] == ["team/app"]


async def test_search_can_require_a_login(make_registry: RegistryFactory, htpasswd: Path) -> None:
    registry = await make_registry(auth_section(htpasswd, search_requires_auth=True))

    assert_challenge(await registry.client.get("/v1/search", params={"q": "x"}))
    assert (await (await registry.as_user("dave")).get("/v1/search")).status_code == 200


# Mounts -------------------------------------------------------------------------------------


async def test_a_mount_from_a_repository_the_caller_cannot_pull_becomes_an_upload(
    registry: Registry,
) -> None:
    """spec end-11: a registry that does not mount "MUST" answer 202 and start an upload."""
    admin = await registry.as_user("admin")
    alice = await registry.as_user("alice")
    secret = await push_blob(admin, "other/secret", random_bytes(128))
    shared = await push_blob(admin, "team/app", random_bytes(128))

    refused = await alice.post(
        "/v2/alice/copy/blobs/uploads/", params={"mount": secret, "from": "other/secret"}
    )
    mounted = await alice.post(
        "/v2/alice/copy/blobs/uploads/", params={"mount": shared, "from": "team/app"}
    )

    assert refused.status_code == 202, refused.text
    assert "/v2/alice/copy/blobs/uploads/" in refused.headers["location"]
    assert (await alice.head(f"/v2/alice/copy/blobs/{secret}")).status_code == 404
    assert mounted.status_code == 201, mounted.text
    assert (await alice.head(f"/v2/alice/copy/blobs/{shared}")).status_code == 200


@pytest.mark.parametrize(
    "order", [("team/app", "other/secret"), ("other/secret", "team/app")], ids=str
)
async def test_a_mount_naming_from_twice_is_refused_whichever_comes_first(
    registry: Registry, order: tuple[str, str]
) -> None:
    """A `from` given twice once meant the first to the permission check and the last to the
    mount: alice, checked on team/app, was given other/secret's blob. A repeated parameter is
    now refused (400 NAME_INVALID) before anything is linked."""
    admin = await registry.as_user("admin")
    alice = await registry.as_user("alice")
    data = random_bytes(128)
    secret = await push_blob(admin, "other/secret", data)
    await push_blob(admin, "team/app", data)  # the same blob, which alice may read there

    query = f"mount={secret}&from={order[0]}&from={order[1]}"
    refused = await alice.post(f"/v2/alice/m2/blobs/uploads/?{query}")

    assert_error(refused, 400, "NAME_INVALID")
    assert (await alice.head(f"/v2/alice/m2/blobs/{secret}")).status_code == 404
    assert (await alice.get("/v2/alice/m2/tags/list")).status_code == 404


@pytest.mark.parametrize("parameter", ["mount", "digest"])
async def test_a_digest_given_twice_is_refused(registry: Registry, parameter: str) -> None:
    alice = await registry.as_user("alice")
    data = random_bytes(64)
    digest = digest_of(data)
    query = f"{parameter}={digest}&{parameter}={digest_of(b'other')}&from=team/app"

    refused = await alice.post(f"/v2/alice/app/blobs/uploads/?{query}", content=data)

    assert_error(refused, 400, "DIGEST_INVALID")
    assert (await alice.head(f"/v2/alice/app/blobs/{digest}")).status_code == 404


async def test_two_authorization_headers_are_refused(registry: Registry) -> None:
    """Which one would count? Neither: 401 with the challenge, whatever the order."""
    headers = [
        ("Authorization", basic("dave")["Authorization"]),
        ("Authorization", basic("admin")["Authorization"]),
    ]
    response = await registry.client.get("/v2/team/app/tags/list", headers=headers)

    assert_challenge(response)


async def test_racing_closing_puts_cannot_link_another_repositorys_blob(
    registry: Registry,
) -> None:
    """Alice fills an upload with as many bytes as a blob of other/secret has, closes it with a
    wrong digest and, while that request runs, with the secret blob's digest. The second PUT
    once found the session without bytes and the secret blob stored at that size, took it for
    the upload's content and linked it. Only what the session itself hashed may complete it."""
    admin = await registry.as_user("admin")
    alice = await registry.as_user("alice")
    secret_data = random_bytes(4096)
    secret = await push_blob(admin, "other/secret", secret_data)

    for _ in range(10):
        location = await start_upload(alice, "alice/app")
        await alice.patch(location, content=random_bytes(4096))
        wrong = "sha512:" + "0" * 128
        first, second = await asyncio.gather(
            alice.put(location, params={"digest": wrong}),
            alice.put(location, params={"digest": secret}),
        )
        # 416: refused at once while the other PUT was writing the upload.
        assert first.status_code in (400, 404, 416), first.text
        assert second.status_code in (400, 404, 416), second.text

    assert (await alice.head(f"/v2/alice/app/blobs/{secret}")).status_code == 404
    assert (await alice.get(f"/v2/alice/app/blobs/{secret}")).status_code == 404


# Speed ----------------------------------------------------------------------------------------


async def test_repeated_credentials_are_hashed_once(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified login is cached: the next requests with it run no bcrypt."""
    calls: list[str] = []
    verify = HtpasswdFile.verify

    def spy(self: HtpasswdFile, username: str, password: str) -> bool:
        calls.append(username)
        return verify(self, username, password)

    monkeypatch.setattr(HtpasswdFile, "verify", spy)
    alice = await registry.as_user("alice")

    for _ in range(5):
        assert (await alice.get("/v2/public/base/tags/list")).status_code in (200, 404)

    assert calls == ["alice"]
    assert set(PASSWORDS) >= set(calls)
