"""The contract suites are libraries the test modules import: let pytest explain their asserts."""

import pytest

pytest.register_assert_rewrite("blob_store", "metadata_store")
