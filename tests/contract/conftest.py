"""The contract suites are libraries the test modules import: let pytest explain their asserts.
And the migrated store, on each backend, of the tests that read its tables as they are."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from postgres import schema

pytest.register_assert_rewrite("blob_store", "metadata_store")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path / 'metadata.db'}"
        upgrade(found)
        yield found
        return
    with schema(request.getfixturevalue("postgres_url"), migrated=True) as found:
        yield found


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqlMetadataStore]:
    store = SqlMetadataStore(url)
    yield store
    await store.close()
