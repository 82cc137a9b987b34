"""Fixtures for the sandbox tests: a private worker pool per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from genprm.sandbox import WorkerPool


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    """A private pool, so tests never share warm workers or leave them running."""
    p = WorkerPool()
    yield p
    p.shutdown()
