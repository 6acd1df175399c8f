"""Fixtures of the two-master tests: one PostgreSQL server and one crossbar router for the session."""

from tests.crossbar import crossbar  # noqa: F401
from tests.pg import postgres  # noqa: F401
