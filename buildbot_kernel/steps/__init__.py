"""Buildbot steps of buildbot-kernel (glue; the logic they call is pure and lives a level up)."""

# Every command we run on a worker passes this. Buildbot's default writes the worker's whole environment
# at the head of each step's log, and anyone who may read builds reads logs: a proxy password, a token or
# a key a lab put in the worker's environment would be shown to all. The variables we set ourselves are
# named in each step's code (and, for the image build, in its reproducer).
WORKER_COMMAND = {"logEnviron": False}
