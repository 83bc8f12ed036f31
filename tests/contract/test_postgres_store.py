"""The metadata contract on PostgreSQL, when PORTSIDE_TEST_POSTGRES_URL names a database to use
(scripts/postgres-test-cluster starts a throwaway one). The suite works in a schema of its own,
dropped at the end, and empties its tables before each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from metadata_store import MetadataStoreContract
from sqlalchemy import create_engine, make_url, text

from portside.metadata.base import MetadataStore
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.metadata.tables import metadata

SERVER = os.environ.get("PORTSIDE_TEST_POSTGRES_URL")

if not SERVER:
    pytest.skip(
        "PORTSIDE_TEST_POSTGRES_URL is not set; scripts/postgres-test-cluster starts a server",
        allow_module_level=True,
    )


@pytest.fixture(scope="session")
def schema_url() -> Iterator[str]:
    assert SERVER
    schema = f"portside_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(SERVER)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(SERVER).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        upgrade(rendered)
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def url(schema_url: str) -> str:
    engine = create_engine(schema_url)
    with engine.begin() as conn:
        names = ", ".join(table.name for table in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return schema_url


class TestPostgresMetadataStore(MetadataStoreContract):
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
