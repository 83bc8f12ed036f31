"""Fixtures of the auth tests."""

from __future__ import annotations

import pytest
from auth_helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
