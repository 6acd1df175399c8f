"""Fixtures of the farm's real-kernel e2e tests (their setup: tests/farm/loop_farm.py)."""

from .loop_farm import linux_tree  # noqa: F401  (the fault suite imports it from there too)
