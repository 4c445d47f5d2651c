"""Fixtures for transport tests: fabrics to run the conformance suite on, and a leak check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import leaked_segments, shm_segments
from transport_helpers import FakeClock


@pytest.fixture(autouse=True)
def no_leftover_segments() -> Iterator[None]:
    """Every transport test must leave /dev/shm as it found it."""
    before = shm_segments()
    yield
    leaked = leaked_segments(before)
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
