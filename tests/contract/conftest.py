"""The contract suites are libraries the test modules import: let pytest explain their asserts."""

import pytest

from s3 import s3_server  # noqa: F401  (a session fixture, for test_s3_store.py)

pytest.register_assert_rewrite("blob_store", "metadata_store")
