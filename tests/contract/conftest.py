"""The contract suites are libraries the test modules import: let pytest explain their asserts.
And the migrated store, on each backend, of the tests that read its tables as they are."""

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from portside.metadata.sql import SqlMetadataStore
from postgres import schema

pytest.register_assert_rewrite("blob_store", "metadata_store")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        # A copy of the session's migrated database (tests/conftest.py): what upgrade would make.
        shutil.copyfile(request.getfixturevalue("migrated_database"), tmp_path / "metadata.db")
        yield f"sqlite:///{tmp_path / 'metadata.db'}"
        return
    with schema(request.getfixturevalue("postgres_url"), migrated=True) as found:
        yield found


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqlMetadataStore]:
    store = SqlMetadataStore(url)
    yield store
    await store.close()
