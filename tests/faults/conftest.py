from tests.pg import postgres  # noqa: F401  (session fixture: one throwaway PostgreSQL server)
