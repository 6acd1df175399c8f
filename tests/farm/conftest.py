"""Fixtures of the farm's real-kernel e2e tests (their setup: tests/farm/loop_farm.py)."""

import pytest

from .loop_farm import prepared_tree, unavailable


@pytest.fixture(scope="module")
def linux_tree():
    """The prepared linux tree (scripts/prepare-linux-tree); skips saying what is missing."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    return prepared_tree()
