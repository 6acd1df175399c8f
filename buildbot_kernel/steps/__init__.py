"""Buildbot steps of buildbot-kernel (glue; the logic they call is pure and lives a level up)."""
