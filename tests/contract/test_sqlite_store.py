"""The metadata contract on SQLite: a fresh database per test, copied from one migrated once."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from metadata_store import MetadataStoreContract

from portside.metadata.base import MetadataStore
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database at the newest schema, migrated once and copied for each test."""
    path = tmp_path_factory.mktemp("sqlite") / "migrated.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def url(migrated: Path, tmp_path: Path) -> str:
    return f"sqlite:///{shutil.copyfile(migrated, tmp_path / 'metadata.db')}"


class TestSqliteMetadataStore(MetadataStoreContract):
    @pytest.fixture
    async def store(self, url: str) -> AsyncIterator[MetadataStore]:
        store = SqlMetadataStore(url)
        yield store
        await store.close()

    @pytest.fixture
    async def other_store(self, url: str) -> AsyncIterator[MetadataStore]:
        store = SqlMetadataStore(url)
        yield store
        await store.close()
