"""Notifications and the audit log through the app: what a push, a pull, a tag move, a delete, a
failed login and a refusal leave in the outbox and the audit log, with the caller's name and
address; and `portside audit` reading them back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from auth_setup import Registry, RegistryFactory, auth_section, basic
from click.testing import CliRunner, Result
from helpers import push_image

from portside.cli import main
from portside.metadata.base import AuditQuery, MetadataStore
from portside.registry.event_buffer import Buffer
from portside.registry.events import BLOB_MEDIA_TYPE, unpack
from portside.server.notifications import background_notifications

NOTIFICATIONS = {"endpoints": [{"name": "ci", "url": "http://127.0.0.1:9/hook"}]}
AUDIT = {"retention": "30d"}


async def events_registry(make_registry: RegistryFactory, htpasswd: Path) -> Registry:
    return await make_registry(
        auth_section(htpasswd), notifications=NOTIFICATIONS, audit=AUDIT, public_url=None
    )


def store(registry: Registry) -> MetadataStore:
    found: MetadataStore = registry.app.state.registry.metadata
    return found


def background(registry: Registry) -> Any:
    """What the app's lifespan runs for events: the buffer written every second, delivery."""
    buffer = registry.app.state.registry.events.sink
    assert isinstance(buffer, Buffer)
    return background_notifications(registry.settings, store(registry), buffer)


async def events(registry: Registry) -> list[dict[str, Any]]:
    pending = await store(registry).pending_events("ci", 1000)
    return [json.loads(e) for row in pending for e in unpack(row.payload)]


async def audited(registry: Registry, **query: Any) -> list[tuple[str, str | None, str | None]]:
    found = await store(registry).audit_entries(AuditQuery(**query))
    return [(r.entry.action, r.entry.actor, r.entry.address) for r in found]


async def test_a_push_is_an_event_per_blob_and_manifest_and_an_audit_entry(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await events_registry(make_registry, htpasswd)
    alice = await registry.as_user("alice")

    pushed = await push_image(alice, "team/app", "latest", layers=2)

    sent = await events(registry)
    assert [(e["action"], e["target"].get("mediaType")) for e in sent] == [
        ("push", BLOB_MEDIA_TYPE),
        ("push", BLOB_MEDIA_TYPE),
        ("push", BLOB_MEDIA_TYPE),
        ("push", pushed.media_type),
    ]
    manifest = sent[-1]
    assert manifest["target"]["digest"] == pushed.digest
    assert manifest["target"]["tag"] == "latest"
    assert (
        manifest["target"]["url"] == f"http://registry.test/v2/team/app/manifests/{pushed.digest}"
    )
    assert manifest["actor"] == {"name": "alice"}
    assert manifest["request"]["method"] == "PUT"
    assert manifest["request"]["addr"] == "127.0.0.1"
    assert len({e["id"] for e in sent}) == 4
    assert await audited(registry, action="push") == [("push", "alice", "127.0.0.1")]


async def test_a_tag_move_and_a_delete_are_audited_and_sent(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await events_registry(make_registry, htpasswd)
    admin = await registry.as_user("admin")
    first = await push_image(admin, "team/app", "latest", layers=1)
    second = await push_image(admin, "team/app", "latest", layers=1)

    response = await admin.delete(f"/v2/team/app/manifests/{second.digest}")
    assert response.status_code == 202

    found = await store(registry).audit_entries(AuditQuery(repository="team/app"))
    assert [(r.entry.action, r.entry.previous) for r in found] == [
        ("push", None),
        ("tag", first.digest),
        ("delete", None),
    ]
    delete = (await events(registry))[-1]
    assert delete["action"] == "delete"
    assert delete["target"] == {"digest": second.digest, "repository": "team/app"}


async def test_pulls_are_buffered_then_written(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await events_registry(make_registry, htpasswd)
    alice = await registry.as_user("alice")
    pushed = await push_image(alice, "team/app", "v1", layers=1)
    before = len(await events(registry))

    async with background(registry):
        assert (await alice.get("/v2/team/app/manifests/v1")).status_code == 200
        layer = next(iter(pushed.blobs))
        assert (await alice.get(f"/v2/team/app/blobs/{layer}")).status_code == 200
        assert len(await events(registry)) == before  # not yet: buffered
    # Its end writes what the buffer holds.

    pulls = (await events(registry))[before:]
    assert [(e["action"], e["target"].get("tag")) for e in pulls] == [
        ("pull", "v1"),
        ("pull", None),
    ]
    assert pulls[0]["actor"] == {"name": "alice"}
    # Written together: one outbox row, delivered in one envelope.
    assert len(await store(registry).pending_events("ci", 1000)) == before + 1


async def test_failed_logins_and_refusals_are_audited(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await events_registry(make_registry, htpasswd)
    intruder = await registry.client_with(basic("alice", "wrong-password"))
    carol = await registry.as_user("carol")  # readers may pull team/*, not push

    async with background(registry):
        assert (await intruder.get("/v2/")).status_code == 401
        assert (await carol.get("/v2/")).status_code == 200
        response = await carol.post("/v2/team/app/blobs/uploads/")
        assert response.status_code == 403

    assert await audited(registry) == [
        ("login-failed", "alice", "127.0.0.1"),
        ("login", "carol", "127.0.0.1"),
        ("denied", "carol", "127.0.0.1"),
    ]
    (denied,) = await store(registry).audit_entries(AuditQuery(action="denied"))
    assert denied.entry.repository == "team/app"
    assert json.loads(denied.entry.detail or "") == {"scope": "repository:team/app:pull,push"}


async def test_portside_audit_lists_what_the_registry_recorded(
    make_registry: RegistryFactory, htpasswd: Path, tmp_path: Path
) -> None:
    registry = await events_registry(make_registry, htpasswd)
    await push_image(await registry.as_user("alice"), "team/app", "v1", layers=1)
    await push_image(await registry.as_user("bob"), "team/web", "v1", layers=1)
    config = tmp_path / "portside.yml"
    config.write_text(yaml.safe_dump({"dev": registry.settings.model_dump(mode="json")}))

    async def audit(*arguments: str) -> Result:  # in a thread: the command runs its own loop
        command = ["audit", "--config", str(config), *arguments]
        return await asyncio.to_thread(CliRunner().invoke, main, command)

    listed = await audit("--user", "alice", "--json")
    plain = await audit("--since", "1h")
    bad = await audit("--since", "yesterday")

    assert listed.exit_code == 0, listed.output
    (entry,) = [json.loads(line) for line in listed.output.splitlines()]
    assert (entry["action"], entry["user"], entry["repository"], entry["tag"]) == (
        "push",
        "alice",
        "team/app",
        "v1",
    )
    assert plain.exit_code == 0, plain.output
    assert [line.split()[1:3] for line in plain.output.splitlines()] == [
        ["push", "alice"],
        ["push", "bob"],
    ]
    assert bad.exit_code == 2
    assert "a duration ago such as 30m" in bad.output


async def test_portside_user_changes_are_audited(
    make_registry: RegistryFactory, htpasswd: Path, tmp_path: Path
) -> None:
    registry = await events_registry(make_registry, htpasswd)
    await push_image(await registry.as_user("alice"), "team/app", "v1", layers=1)  # a database
    config = tmp_path / "portside.yml"
    config.write_text(yaml.safe_dump({"dev": registry.settings.model_dump(mode="json")}))

    def user(*arguments: str) -> Result:
        command = ["user", *arguments, "--config", str(config), "--rounds", "4"]
        return CliRunner().invoke(main, command, input="erin-Secret-6\n")

    added = await asyncio.to_thread(user, "add", "erin", "--password-stdin")

    assert added.exit_code == 0, added.output
    (entry,) = await store(registry).audit_entries(AuditQuery(action="user-add"))
    assert json.loads(entry.entry.detail or "") == {"user": "erin"}
    assert entry.entry.actor
