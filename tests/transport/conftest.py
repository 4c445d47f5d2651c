"""Fixtures for transport tests: fabrics to run the conformance suite on, and a leak check."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from onepiece_hpc.transport.fabrics.shm import SHM_DIR, PREFIX
from transport_helpers import FakeClock


def _segments() -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)} if os.path.isdir(SHM_DIR) \
        else set()


@pytest.fixture(autouse=True)
def no_leftover_segments() -> Iterator[None]:
    """Every transport test must leave /dev/shm as it found it."""
    before = _segments()
    yield
    leaked = _segments() - before
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
