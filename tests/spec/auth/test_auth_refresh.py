"""Refresh tokens live in the metadata database: two instances on one database (as behind a load
balancer) accept each other's refresh tokens, and only their hashes are stored."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auth_setup import Registry, RegistryFactory, auth_section, basic, bearer
from helpers import assert_error, push_blob, random_bytes
from sqlalchemy import create_engine, text

from portside.auth.htpasswd import remove_user
from postgres import schema

SERVICE = "registry.test"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One database for both instances; PostgreSQL's from the postgres_url fixture."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with schema(request.getfixturevalue("postgres_url")) as url:
        yield url


async def instances(
    make_registry: RegistryFactory, htpasswd: Path, database_url: str, key: Path
) -> tuple[Registry, Registry]:
    """Two create_app on one database, the same users and signing key: each its own
    storage_path, so nothing passes between them but through the database."""
    token = {"service": SERVICE, "key_path": str(key)}
    auth = auth_section(htpasswd, token=token)
    one = await make_registry(auth, database_url=database_url)
    two = await make_registry(auth, database_url=database_url)
    assert one.settings.storage_path != two.settings.storage_path
    return one, two


async def login(registry: Registry, username: str) -> str:
    response = await registry.client.get(
        "/auth/token",
        params={"service": SERVICE, "offline_token": "true", "client_id": "test"},
        headers=basic(username),
    )
    assert response.status_code == 200, response.text
    refresh_token: str = response.json()["refresh_token"]
    return refresh_token


async def refresh(registry: Registry, refresh_token: str, **form: str) -> Any:
    return await registry.client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, **form},
    )


async def test_a_refresh_token_issued_by_one_instance_is_accepted_by_another(
    make_registry: RegistryFactory, htpasswd: Path, database_url: str, tmp_path: Path
) -> None:
    one, two = await instances(make_registry, htpasswd, database_url, tmp_path / "key.pem")
    refresh_token = await login(one, "alice")

    response = await refresh(two, refresh_token, scope="repository:team/app:pull,push")
    back = await refresh(one, refresh_token)

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "repository:team/app:pull,push"
    assert back.status_code == 200, back.text
    token = bearer(response.json()["token"])
    pushed = await push_blob(await two.client_with(token), "team/app", random_bytes())
    assert (await (await one.client_with(token)).head(f"/v2/team/app/blobs/{pushed}")).is_success


async def test_a_removed_user_loses_every_refresh_token_on_every_instance(
    make_registry: RegistryFactory, htpasswd: Path, database_url: str, tmp_path: Path
) -> None:
    one, two = await instances(make_registry, htpasswd, database_url, tmp_path / "key.pem")
    first, second = await login(one, "dave"), await login(two, "dave")
    remove_user(htpasswd, "dave")

    refused = await refresh(two, first)

    assert_error(refused, 401, "UNAUTHORIZED")
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM refresh_tokens")).scalar_one()
    finally:
        engine.dispose()
    assert left == 0  # the second token too, though nobody has tried it yet
    assert_error(await refresh(one, second), 401, "UNAUTHORIZED")


async def test_refresh_tokens_are_stored_as_hashes_only(
    make_registry: RegistryFactory, htpasswd: Path, tmp_path: Path
) -> None:
    registry = await make_registry(auth_section(htpasswd, token={"service": SERVICE}))
    refresh_token = await login(registry, "alice")

    engine = create_engine(registry.settings.metadata_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT token_hash, username FROM refresh_tokens")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [
        (hashlib.sha256(refresh_token.encode()).hexdigest(), "alice")
    ]
    for path in Path(registry.settings.storage_path).rglob("*"):
        if path.is_file():
            assert refresh_token.encode() not in path.read_bytes(), path
    assert not (Path(registry.settings.storage_path) / "auth" / "refresh-tokens.json").exists()
