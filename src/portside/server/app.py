"""create_app(settings) → the ASGI app: builds the stores once and hands them down."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect

from portside.api.guard import Guarded
from portside.api.routes import routes as route_table
from portside.api.ui.sessions import Sessions
from portside.api.ui.visitors import Ui
from portside.api.urls import PublicAddress
from portside.config.settings import Settings
from portside.metadata.sql import SqlMetadataStore
from portside.registry.errors import RegistryError
from portside.registry.health import Health, HealthPolicy
from portside.registry.mirror import Mirror
from portside.registry.service import Registry
from portside.server import auth, errors
from portside.server.collector import background_collection
from portside.server.cors import Cors
from portside.server.errors import http_error, incomplete_body, registry_error
from portside.server.gate import OpenGate
from portside.server.mail import ExceptionMail, ExceptionMailer
from portside.server.metrics import flushing
from portside.server.metrics_access import MetricsReaders
from portside.server.middleware import RegistryMiddleware
from portside.server.mirroring import NamespaceMiddleware, upstream_routes
from portside.server.notifications import background_notifications, recorder
from portside.server.policies import build_policies, recording_pulls
from portside.storage.base import BlobStore
from portside.storage.filesystem import FilesystemBlobStore
from portside.storage.timed import TimedBlobStore


def _s3_store(settings: Settings) -> BlobStore:
    from portside.storage.s3 import S3BlobStore  # boto3 is the optional extra portside[s3]

    return S3BlobStore(
        settings.s3_bucket or "",
        str(settings.storage_path),
        endpoint_url=settings.s3_endpoint,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        path_style=settings.s3_path_style,
        part_size=settings.s3_part_size,
        encrypt=settings.s3_encrypt,
    )


# Drivers by the config's `storage` name; an unknown name is a config error, never a silent default.
STORAGE_DRIVERS: dict[str, Callable[[Settings], BlobStore]] = {
    "local": lambda settings: FilesystemBlobStore(Path(settings.storage_path)),
    "s3": _s3_store,
}


def _health(
    settings: Settings, storage: BlobStore, metadata: SqlMetadataStore, mirror: Mirror | None
) -> Health:
    local = settings.storage == "local"
    policy = HealthPolicy(
        free_space_path=Path(settings.storage_path) if local else None,
        min_free_space=settings.health.min_free_space,
        drain_file=settings.health.drain_file,
        cache_seconds=settings.health.cache_seconds,
        timeout_seconds=settings.health.timeout_seconds,
    )
    upstreams = {} if mirror is None else {str(u.url): u for u in mirror.upstreams.values()}
    return Health(storage, metadata, policy, upstreams)


def _ui(settings: Settings, metadata: SqlMetadataStore, access: auth.AuthParts | None) -> Ui:
    """The web UI's state: its sessions in metadata, judged by the gate's authenticator and
    policy (none: an open registry)."""
    return Ui(
        Sessions(metadata, settings.ui.session_lifetime),
        PublicAddress(settings.public_url, settings.trust_forwarded_headers),
        authenticator=access.gate.authenticator if access is not None else None,
        policy=access.gate.policy if access is not None else None,
        delete_enabled=settings.delete_enabled,
    )


def create_app(settings: Settings) -> Starlette:
    storage = STORAGE_DRIVERS[settings.storage](settings)
    metrics = settings.metrics.enabled
    if metrics:
        storage = TimedBlobStore(storage, settings.storage)
    metadata = SqlMetadataStore(settings.metadata_url)
    events, buffer = recorder(settings, metadata)
    policies = build_policies(settings, metadata)
    redirect_seconds = settings.storage_redirect_seconds if settings.storage_redirect else None
    registry = Registry.build(
        storage,
        metadata,
        settings.max_blob_size,
        redirect_seconds,
        upstream_routes(settings.mirroring),
        events,
        policies,
    )
    mirror = registry.mirror

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            background_collection(settings, storage, metadata),
            background_notifications(settings, metadata, buffer),
            recording_pulls(policies.pull_times),
            flushing() if metrics else contextlib.nullcontext(),
        ):
            yield
        if mirror is not None:
            await mirror.close()
        await metadata.close()

    middleware = []
    if settings.email_exceptions is not None and settings.email_exceptions.enabled:
        mailer = ExceptionMailer(settings.email_exceptions)
        middleware.append(Middleware(ExceptionMail, mailer=mailer))
    middleware.append(Middleware(RegistryMiddleware, metrics=metrics))
    if settings.cors is not None and settings.cors.enabled:
        # Before auth: preflights carry no credentials.
        middleware.append(Middleware(Cors, settings=settings.cors))
    if settings.mirroring is not None and settings.mirroring.enabled:
        middleware.append(Middleware(NamespaceMiddleware, settings=settings.mirroring))
    readers = MetricsReaders(settings.metrics, settings.trust_forwarded_headers)
    access = auth.build(settings, metadata, events, readers)
    ui = settings.ui
    routes = route_table(access.token_path if access is not None else None, metrics, ui.enabled)
    unguarded = [route for route in routes if not isinstance(route, Guarded)]
    if unguarded:  # fail closed: a route that does not say what it needs is never served
        raise TypeError(f"routes without a declared access: {unguarded}")

    app = Starlette(
        # Never Starlette's debug pages: a client gets the spec's envelope, the log the traceback.
        debug=False,
        routes=routes,
        middleware=middleware,
        exception_handlers={
            RegistryError: registry_error,
            HTTPException: http_error,
            ClientDisconnect: incomplete_body,
        },
        lifespan=lifespan,
    )
    for error in errors.STORAGE_ERRORS:  # a full disk: 507 in the spec's envelope
        app.add_exception_handler(error, errors.storage_error)
    app.state.registry = registry
    app.state.public_address = PublicAddress(settings.public_url, settings.trust_forwarded_headers)
    app.state.issue = settings.issue
    app.state.search = settings.search_backend == "sqlalchemy"
    app.state.delete_enabled = settings.delete_enabled
    app.state.max_manifest_size = settings.max_manifest_size
    # Each route asks the gate before its endpoint runs (api/guard.py); None: an open registry
    # (whose gate, with metrics, only keeps /metrics to the addresses of metrics.allow).
    app.state.gate = access.gate if access is not None else OpenGate(readers) if metrics else None
    app.state.health = _health(settings, storage, metadata, mirror)
    app.state.token_service = access.token_service if access is not None else None
    app.state.ui = _ui(settings, metadata, access) if ui.enabled else None
    return app
