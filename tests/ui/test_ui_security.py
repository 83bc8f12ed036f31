"""The web UI's defences, in process: its headers, its cookies, CSRF on every change, escaping
of what clients pushed, and who sees what."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from ui_pushes import push_image
from ui_visits import Visit, csrf_of, log_in

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import create_app

PAGES = ["/ui/", "/ui/login", "/ui/usage", "/ui/repositories/nothing/here", "/ui/no/such/page"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_carries_a_strict_content_security_policy(visit: Visit, path: str) -> None:
    response = await (await visit()).get(path)
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


async def test_the_session_cookie_is_httponly_samesite_and_scoped_to_the_ui(visit: Visit) -> None:
    client = await visit()
    answer = await log_in(client, "alice")
    assert answer.status_code == 303
    cookie = next(v for v in answer.headers.get_list("set-cookie") if "portside_session=" in v)
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "path=/ui" in flags
    assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back


async def test_the_session_cookie_is_secure_over_tls(auth_settings: Settings) -> None:
    settings = auth_settings.model_copy(update={"public_url": "https://registry.example"})
    Path(settings.storage_path).mkdir(parents=True)
    upgrade(settings.metadata_url)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="https://registry.example") as c:
        answer = await log_in(c, "alice")
    cookie = next(v for v in answer.headers.get_list("set-cookie") if "portside_session=" in v)
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_a_login_without_the_csrf_token_is_refused(visit: Visit) -> None:
    client = await visit()
    await client.get("/ui/login")  # the CSRF cookie is set, but the form's token is not sent
    answer = await client.post("/ui/login", data={"username": "alice", "password": "alice-pw-1"})
    assert answer.status_code == 403
    assert "portside_session" not in answer.headers.get("set-cookie", "")


async def test_a_delete_without_the_csrf_token_is_refused_and_deletes_nothing(
    visit: Visit, pusher: httpx.AsyncClient
) -> None:
    await push_image(pusher, "ops/api", "v1")
    olga = await visit("olga")
    form = {"repository": "ops/api", "reference": "v1"}
    assert (await olga.post("/ui/delete", data=form)).status_code == 403
    assert (await olga.post("/ui/delete", data={**form, "csrf": "x" * 43})).status_code == 403
    tags = await pusher.get("/v2/ops/api/tags/list")
    assert tags.json()["tags"] == ["v1"]


async def test_a_change_posted_from_another_site_is_refused_even_with_the_token(
    visit: Visit, pusher: httpx.AsyncClient
) -> None:
    await push_image(pusher, "ops/api", "v1")
    olga = await visit("olga")
    confirm = await olga.get("/ui/delete", params={"repository": "ops/api", "reference": "v1"})
    form = {"repository": "ops/api", "reference": "v1", "csrf": csrf_of(confirm.text)}
    refused = await olga.post("/ui/delete", data=form, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    done = await olga.post("/ui/delete", data=form, headers={"Origin": "http://registry.test"})
    assert done.status_code == 303
    assert (await pusher.get("/v2/ops/api/tags/list")).json()["tags"] == []


async def test_hostile_labels_annotations_and_descriptions_are_escaped(
    visit: Visit, pusher: httpx.AsyncClient
) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    digest = await push_image(
        pusher,
        "public/app",
        "v1",
        labels={"org.opencontainers.image.description": hostile, hostile: hostile},
        annotations={hostile: hostile},
    )
    client = await visit()
    pages = [
        "/ui/",
        f"/ui/?q={hostile}",
        "/ui/repositories/public/app",
        f"/ui/images/public/app@{digest}",
    ]
    for path in pages:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert "<script>alert" not in response.text, path
        assert "<img src=x" not in response.text, path
    image = await client.get(f"/ui/images/public/app@{digest}")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in image.text


async def test_anonymous_visitors_see_only_what_anonymous_pull_allows(
    visit: Visit, pusher: httpx.AsyncClient
) -> None:
    public = await push_image(pusher, "public/app", "v1")
    await push_image(pusher, "team/secret", "v1")
    anonymous = await visit()
    listing = await anonymous.get("/ui/")
    assert "public/app" in listing.text
    assert "team/secret" not in listing.text
    hidden = await anonymous.get("/ui/repositories/team/secret")
    missing = await anonymous.get("/ui/repositories/team/nothing")
    assert hidden.status_code == missing.status_code == 404
    assert (await anonymous.get(f"/ui/images/public/app@{public}")).status_code == 200
    assert "team/secret" not in (await anonymous.get("/ui/?q=secret")).text


async def test_a_user_does_not_see_another_teams_private_repositories(
    visit: Visit, pusher: httpx.AsyncClient
) -> None:
    await push_image(pusher, "team/web", "v1")
    digest = await push_image(pusher, "ops/db", "v1")
    alice = await visit("alice")
    listing = await alice.get("/ui/")
    assert "team/web" in listing.text
    assert "ops/db" not in listing.text
    assert (await alice.get("/ui/repositories/ops/db")).status_code == 404
    assert (await alice.get(f"/ui/images/ops/db@{digest}")).status_code == 404
    confirm = await alice.get("/ui/delete", params={"repository": "ops/db", "reference": "v1"})
    assert confirm.status_code == 404


async def test_a_user_without_delete_permission_gets_no_delete_and_cannot_post_one(
    visit: Visit, pusher: httpx.AsyncClient
) -> None:
    await push_image(pusher, "team/web", "v1")
    alice = await visit("alice")
    page = await alice.get("/ui/repositories/team/web")
    assert "Delete" not in page.text
    form = {"repository": "team/web", "reference": "v1", "csrf": csrf_of(page.text)}
    assert (await alice.post("/ui/delete", data=form)).status_code == 403
    assert (await pusher.get("/v2/team/web/tags/list")).json()["tags"] == ["v1"]


async def test_a_wrong_password_starts_no_session(visit: Visit) -> None:
    client = await visit()
    answer = await log_in(client, "alice", "wrong")
    assert answer.status_code == 401
    assert "Wrong username or password" in answer.text
    assert "portside_session" not in answer.headers.get("set-cookie", "")


async def test_logging_out_ends_the_session_everywhere(visit: Visit) -> None:
    alice = await visit("alice")
    session = alice.cookies["portside_session"]
    page = await alice.get("/ui/")
    assert "Logged in as" in page.text
    answer = await alice.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 303
    replay = await visit()
    replay.cookies.set("portside_session", session, domain="registry.test", path="/ui")
    assert "Logged in as" not in (await replay.get("/ui/")).text


async def test_a_redirect_after_login_stays_on_this_site(visit: Visit) -> None:
    for target, expected in [
        ("//evil.example/", "/ui/"),
        ("https://evil.example/ui/", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/ui/usage", "/ui/usage"),
    ]:
        client = await visit()
        form = await client.get("/ui/login")
        answer = await client.post(
            "/ui/login",
            data={
                "csrf": csrf_of(form.text),
                "username": "alice",
                "password": "alice-pw-1",
                "next": target,
            },
        )
        assert answer.headers["location"] == expected
