"""No credential reaches a log: not passwords, tokens or refresh tokens, whether they come in the
Authorization header, the token endpoint's query string or its form body."""

from __future__ import annotations

import logging

import pytest
from auth_setup import PASSWORDS, Registry, basic, bearer


async def test_credentials_and_tokens_never_reach_a_log(
    token_registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = token_registry.client
    secrets = [*PASSWORDS.values(), "wrong-Password-9"]

    await client.get("/v2/", headers=basic("alice"))
    await client.get("/v2/", headers=basic("alice", "wrong-Password-9"))
    got = await client.get(
        "/auth/token",
        params={"service": "registry.test", "scope": "repository:team/app:pull", "account": "bob"},
        headers=basic("bob"),
    )
    offline = await client.get(
        "/auth/token", params={"offline_token": "true", "account": "carol"}, headers=basic("carol")
    )
    refresh_token = offline.json()["refresh_token"]
    posted = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "dave", "password": PASSWORDS["dave"]},
    )
    await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )
    await client.get("/v2/team/app/tags/list", headers=bearer(got.json()["token"]))
    await client.get("/v2/team/app/tags/list", headers=bearer(got.json()["token"] + "x"))
    secrets += [got.json()["token"], posted.json()["token"], refresh_token]

    text = caplog.text
    for secret in secrets:
        assert secret not in text
    assert "Basic " not in text
    assert "Bearer " not in text
    access = [r.getMessage() for r in caplog.records if r.name == "portside.access"]
    assert len(access) == 8
    assert all("?" not in line and "scope" not in line and "account" not in line for line in access)
    assert sum(" /auth/token " in line for line in access) == 4
