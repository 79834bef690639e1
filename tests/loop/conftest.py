"""Fixtures shared by the loop's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inbox_poller.loop.poller import Poller


@pytest.fixture
def pollers() -> Iterator[list[Poller]]:
    """The pollers a test makes, closed after it: each may have started a mail reader's
    worker process (``run_once`` starts one while the mailbox connects)."""
    made: list[Poller] = []
    yield made
    for poller in made:
        poller.close()
