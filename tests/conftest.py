"""Shared test helpers. Area-specific fixtures live in tests/fixtures_*.py plugins."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

pytest_plugins: list[str] = ["tests.fixtures_daemon"]


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns a truthy value or stops raising AssertionError; then return it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(interval)


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` beside the checkout: the real market data samples (read-only)."""
    if not SHARED_DATA.is_dir():
        raise RuntimeError(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
