"""Fixtures shared by the integration tests: the database backends a test master can run on."""

import pytest

from tests.pg import postgres  # noqa: F401  (session fixture: one throwaway PostgreSQL server)

# SQLite is the default; "pg" runs the same tests on PostgreSQL (marked `postgres`, deselect with -m)
DB_BACKENDS = ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)]


def db_url_for(request, hint: str) -> str | None:
    """None for SQLite (the master's default file), else a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database(hint)
