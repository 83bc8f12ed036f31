"""Fixtures of the auth tests: an htpasswd file of PASSWORDS, and registries with an auth section
whose clients keep their app and settings at hand (auth_setup.Registry)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from auth_setup import Registry, RegistryFactory, auth_section, open_registry, write_htpasswd

from portside.config.settings import Settings


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return write_htpasswd(tmp_path / "htpasswd")


@pytest.fixture
async def make_registry(make_settings: Callable[..., Settings]) -> AsyncIterator[RegistryFactory]:
    """make_registry(auth_section, **settings): a fresh registry with that auth section."""
    async with AsyncExitStack() as stack:

        async def make(auth: dict[str, Any], **settings: Any) -> Registry:
            registry = await open_registry(stack, make_settings(auth=auth, **settings))
            stack.push_async_callback(registry.app.state.registry.metadata.close)
            return registry

        yield make


@pytest.fixture
async def registry(make_registry: RegistryFactory, htpasswd: Path) -> Registry:
    """Basic auth from `htpasswd`, permissions from auth_setup.ACCESS."""
    return await make_registry(auth_section(htpasswd))


@pytest.fixture
async def token_registry(make_registry: RegistryFactory, htpasswd: Path) -> Registry:
    """The same users and permissions, with the built-in token service at /auth/token."""
    return await make_registry(auth_section(htpasswd, token={"service": "registry.test"}))
