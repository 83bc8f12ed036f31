"""What the classic keys do in a running registry: cors, email_exceptions (against a real SMTP
server, aiosmtpd), search_backend, and s3_encrypt (against the real S3 test server)."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from portside.auth.htpasswd import add_user
from portside.config.mail import EmailSettings
from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.registry.discovery import Discovery
from portside.server.app import create_app
from portside.server.mail import ExceptionMailer
from s3 import S3Server

SECRET = "hunter2-s3cr3t"


def make_settings(tmp_path: Path, **values: Any) -> Settings:
    settings = Settings.model_validate({"storage_path": tmp_path / "registry", **values})
    Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
    upgrade(settings.metadata_url)
    return settings


@pytest.fixture
async def client_for(tmp_path: Path) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(**values: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(tmp_path, **values))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://registry.test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def with_auth(tmp_path: Path) -> dict[str, Any]:
    htpasswd = tmp_path / "htpasswd"
    add_user(htpasswd, "alice", SECRET)
    return {"htpasswd": {"path": str(htpasswd)}}


PREFLIGHT = {
    "Origin": "https://ui.example.com",
    "Access-Control-Request-Method": "PUT",
    "Access-Control-Request-Headers": "content-type",
}


# cors -------------------------------------------------------------------------------------------


async def test_preflight_is_answered_without_credentials_with_auth_on(
    tmp_path: Path, client_for: Any
) -> None:
    client = client_for(
        auth=with_auth(tmp_path),
        cors={"origins": ["https://ui.example.com"], "headers": ["Content-Type"], "max_age": 60},
    )

    answer = await client.options("/v2/team/app/blobs/uploads/", headers=PREFLIGHT)

    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://ui.example.com"
    assert "PUT" in answer.headers["access-control-allow-methods"]
    assert answer.headers["access-control-max-age"] == "60"
    assert "www-authenticate" not in answer.headers
    # The request that follows is authenticated, and its refusal readable by the page.
    refused = await client.get("/v2/", headers={"Origin": "https://ui.example.com"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://ui.example.com"
    assert "Origin" in refused.headers["vary"]


async def test_preflight_of_another_origin_is_refused(client_for: Any) -> None:
    client = client_for(cors={"origins": "https://ui.example.com"})

    answer = await client.options("/v2/", headers={**PREFLIGHT, "Origin": "https://evil.test"})

    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


async def test_origins_that_look_like_patterns_match_whole_origins(client_for: Any) -> None:
    client = client_for(cors={"origins": [r"https://.*\.example\.com"]})

    good = await client.get("/v2/", headers={"Origin": "https://ui.example.com"})
    bad = await client.get("/v2/", headers={"Origin": "https://ui.example.com.evil.test"})

    assert good.headers["access-control-allow-origin"] == "https://ui.example.com"
    assert "access-control-allow-origin" not in bad.headers


@pytest.mark.parametrize(("send_wildcard", "expected"), [(False, "https://a.test"), (True, "*")])
async def test_any_origin_answers_the_origin_unless_send_wildcard(
    client_for: Any, send_wildcard: bool, expected: str
) -> None:
    client = client_for(cors={"origins": "*", "send_wildcard": send_wildcard})

    answer = await client.get("/v2/", headers={"Origin": "https://a.test"})

    assert answer.headers["access-control-allow-origin"] == expected


@pytest.mark.parametrize(("always_send", "expected"), [(True, "*"), (False, None)])
async def test_always_send_marks_requests_without_origin(
    client_for: Any, always_send: bool, expected: str | None
) -> None:
    client = client_for(cors={"origins": "*", "always_send": always_send})

    answer = await client.get("/v2/")

    assert answer.headers.get("access-control-allow-origin") == expected


async def test_credentials_and_exposed_headers(client_for: Any) -> None:
    client = client_for(
        cors={
            "origins": "*",
            "supports_credentials": True,
            "expose_headers": "Docker-Content-Digest, Location",
        }
    )

    answer = await client.get("/v2/", headers={"Origin": "https://a.test"})

    assert answer.headers["access-control-allow-origin"] == "https://a.test"
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["access-control-expose-headers"] == "Docker-Content-Digest, Location"


async def test_resources_pick_the_paths(client_for: Any) -> None:
    client = client_for(cors={"origins": "*", "resources": ["/v1/"]})

    v1 = await client.get("/v1/_ping", headers={"Origin": "https://a.test"})
    v2 = await client.get("/v2/", headers={"Origin": "https://a.test"})

    assert "access-control-allow-origin" in v1.headers
    assert "access-control-allow-origin" not in v2.headers


async def test_without_automatic_options_preflights_meet_auth(
    tmp_path: Path, client_for: Any
) -> None:
    client = client_for(auth=with_auth(tmp_path), cors={"origins": "*", "automatic_options": False})

    answer = await client.options("/v2/", headers=PREFLIGHT)

    assert answer.status_code in (401, 405)  # the registry's answer to an OPTIONS
    assert "access-control-allow-origin" not in answer.headers


async def test_no_cors_without_origins(client_for: Any) -> None:
    client = client_for(cors={"origins": None, "headers": ["Content-Type"]})

    answer = await client.options("/v2/", headers=PREFLIGHT)

    assert "access-control-allow-origin" not in answer.headers


# search_backend -------------------------------------------------------------------------------


async def test_search_without_a_backend_answers_no_results(client_for: Any) -> None:
    client = client_for(search_backend="")

    answer = await client.get("/v1/search", params={"q": "app"})

    assert answer.status_code == 200
    assert answer.json() == {"query": "app", "num_results": 0, "results": []}


# email_exceptions -------------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        with self.arrived:
            self.messages.append(envelope)
            self.arrived.notify_all()
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=True)

    def wait(self, count: int, timeout: float = 10.0) -> list[str]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        return [self.text(envelope) for envelope in self.messages]

    @staticmethod
    def text(envelope: Envelope) -> str:
        """Subject and body, decoded."""
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return f"Subject: {message['Subject']}\n{message.get_content()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield mailbox, port
    controller.stop()


def smtp_settings(port: int, **values: Any) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "from_addr": "registry@example.com",
        "to_addr": ["ops@example.com", "dev@example.com"],
        **values,
    }


async def test_an_unhandled_exception_is_mailed_without_credentials(
    client_for: Any, smtp: tuple[Mailbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox, port = smtp

    async def boom(*args: object) -> None:
        raise RuntimeError("lost postgresql://portside:db-pa55@db.internal/registry")

    monkeypatch.setattr(Discovery, "search", boom)
    client = client_for(
        email_exceptions=smtp_settings(port, smtp_login="mailer", smtp_password="mail-pa55")
    )

    answer = await client.get(
        "/v1/search?q=app&token=query-secret",
        headers={"Authorization": f"Basic {SECRET}", "Cookie": f"session={SECRET}"},
    )

    assert answer.status_code == 500
    [text] = mailbox.wait(1)
    envelope = mailbox.messages[0]
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert mailbox.logins == [(b"mailer", b"mail-pa55")]
    assert "Subject: Docker registry exception: RuntimeError on " in text
    assert "GET /v1/search on " in text
    assert "Traceback" in text
    assert "RuntimeError: lost postgresql://portside:***@db.internal/registry" in text
    for secret in (SECRET, "query-secret", "db-pa55", "mail-pa55"):
        assert secret not in text


async def test_no_mail_for_answered_errors(client_for: Any, smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    client = client_for(email_exceptions=smtp_settings(port))

    answer = await client.get("/v2/nope/manifests/latest")

    assert answer.status_code == 404
    time.sleep(0.5)
    assert mailbox.messages == []


def test_one_mail_a_minute_and_the_next_counts_the_rest(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    now = [1000.0]
    mailer = ExceptionMailer(EmailSettings(**smtp_settings(port)), clock=lambda: now[0])

    sent = [mailer.report("GET", f"/v2/{i}", ValueError(str(i))) for i in range(3)]
    now[0] += 61
    sent.append(mailer.report("PUT", "/v2/last", ValueError("last")))

    assert [thread is not None for thread in sent] == [True, False, False, True]
    first, second = sorted(mailbox.wait(2), key=lambda text: "/v2/last" in text)
    assert "GET /v2/0 " in first
    assert "not mailed" not in first
    assert "PUT /v2/last " in second
    assert "2 more unhandled exception(s) since the previous mail were not mailed" in second


def test_an_unreachable_smtp_server_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    mailer = ExceptionMailer(EmailSettings(**smtp_settings(free_port())))

    thread = mailer.report("GET", "/v2/", ValueError("x"))

    assert thread is not None
    thread.join(30)
    assert "could not mail an exception through 127.0.0.1" in caplog.text


# s3_encrypt -------------------------------------------------------------------------------------

MAKERS = {"PutObject", "CreateMultipartUpload", "CopyObject"}


def record_encryption(client: Any, seen: list[tuple[str, object]]) -> None:
    """Notes the ServerSideEncryption of each call, then takes it out: the test server (Ceph
    RGW over plain HTTP) refuses SSE-S3 with InvalidRequest."""

    def note(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, params.pop("ServerSideEncryption", None)))

    client.meta.events.register("before-parameter-build.s3", note)


@pytest.mark.parametrize("encrypt", [True, False])
async def test_s3_encrypt_asks_for_aes256_on_every_object_made(
    s3_server: S3Server,
    encrypt: bool,
) -> None:
    mib = 1024 * 1024
    store = s3_server.store(encrypt=encrypt, part_size=5 * mib, max_copy_size=5 * mib)
    seen: list[tuple[str, object]] = []
    record_encryption(store.client, seen)

    await store.put("small", b"small")
    writer = await store.writer("uploads/big")
    await writer.write(b"x" * (6 * mib))
    await writer.close()
    await store.move("uploads/big", "blobs/big")  # above max_copy_size: a multipart copy
    await store.move("small", "blobs/small")  # a CopyObject

    made = {(name, sse) for name, sse in seen if name in MAKERS}
    assert {name for name, _ in made} == MAKERS
    assert {sse for _, sse in made} == {"AES256" if encrypt else None}
    assert await store.get("blobs/big") == b"x" * (6 * mib)
