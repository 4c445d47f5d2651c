"""Session fixtures: every test session builds the built-in models into a private cache."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# A suite started in the background of a script inherits SIGINT ignored, and so would every process
# a test starts: the tests that interrupt a run would then test nothing. Start them as a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Built-in models are built once per test session into a private cache."""
    cache = tmp_path_factory.mktemp("onepiece-cache")
    os.environ["ONEPIECE_CACHE"] = str(cache)
    return cache


@pytest.fixture(autouse=True)
def environment_is_restored():
    """What a test sets in os.environ does not leak into the next one (MPI reads it at start-up)."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


def pytest_collection_modifyitems(items):
    """Tests that need the local Slurm run last: its cluster stays up (and its environment set)
    until the session ends, and nothing else should run beside it."""
    items.sort(key=lambda item: "tests/slurm/" in item.nodeid.replace("\\", "/"))
