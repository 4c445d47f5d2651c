"""Session fixtures: every test session builds the built-in models into a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Built-in models are built once per test session into a private cache."""
    cache = tmp_path_factory.mktemp("onepiece-cache")
    os.environ["ONEPIECE_CACHE"] = str(cache)
    return cache
