"""A master on PostgreSQL rides out a database restart instead of losing what it was writing.

Buildbot retries a query only on the errors its strategy for the database names (MySQL's lost
connection, SQLite's lock), and on PostgreSQL none: after ``pg_ctl restart`` (every connection
terminated) each query on a pooled connection failed once, and a failed write in the middle of a build or
a bisect step ended it with an exception, the result lost.  Here, for the master's engine:

- a connection the server dropped counts as worth retrying: Buildbot's own retry loop runs the whole
  transaction again, on a new connection, with its backoff (1 s, doubling) and its log line for each try;
- a new connection is retried while the server is away (it may take seconds to come back), with a log
  line for each try, for up to :data:`WAIT_FOR_SERVER` seconds; after that the error reaches the master
  and it says so loudly in twistd.log.

README.md, "When things fail", says what an admin sees.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from buildbot.util import service
from twisted.python import log

from buildbot_kernel import buildbot_adapter as bb

WAIT_FOR_SERVER = 300.0  # seconds a new connection keeps trying before the error reaches the master
FIRST_DELAY, MAX_DELAY = 0.5, 10.0


def engine_kwargs(db_url: str) -> dict:
    """``c['db']['engine_kwargs']``: on PostgreSQL, check a pooled connection before using it (one that
    died with a server restart is replaced instead of failing the query); on an SQLite file, keep the
    connection open between queries.

    Buildbot opens an SQLite file with SQLAlchemy's ``NullPool`` (a workaround from SQLAlchemy 0.6): every
    query opened the file, read the schema and, closing the only connection, checkpointed the WAL into
    the database file. That is 3.4 ms against 0.2 ms a query here, on the master's one database thread,
    and a branch build makes ~450 queries: with two workers building, their steps queued behind each
    other's queries. A pool that keeps the connection (SQLAlchemy's own default for an SQLite file) makes
    no other change: one database thread still runs every query, in order, and SQLite checkpoints the
    WAL itself as it grows. SQLAlchemy 2 turns ``check_same_thread`` off for a pooled SQLite file itself
    (the connection made at start-up on the reactor thread is reused by the database thread, never two
    threads at once). Nothing SQLite-only goes in: ``buildbot copy-db`` opens its PostgreSQL destination
    with the kwargs master.cfg made for the SQLite source (``check_same_thread`` there broke the copy)."""
    if db_url.startswith("postgresql"):
        return {"pool_pre_ping": True}
    if sqlite_file(db_url):
        return {"poolclass": sa.pool.QueuePool}
    return {}


def sqlite_file(db_url: str) -> bool:
    """An SQLite database in a file (an in-memory one keeps Buildbot's own single-connection set-up)."""
    try:
        url = sa.engine.make_url(db_url)
    except sa.exc.ArgumentError:
        return False  # the settings check names the bad URL; Buildbot says the same at start
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def dropped(error) -> bool:
    """The error says the connection is gone (SQLAlchemy recognised a disconnect)."""
    return bool(getattr(error, "connection_invalidated", False))


def reconnecting(engine, wait: float = WAIT_FOR_SERVER, say=log.msg, clock=time.monotonic, sleep=time.sleep):
    """Make ``engine`` (Buildbot's: it has ``should_retry``) retry dropped connections and wait for the
    server when connecting; runs in Buildbot's database threads, so waiting blocks no reactor."""
    original = engine.should_retry
    engine.should_retry = lambda e: dropped(e) or original(e)

    @sa.event.listens_for(engine, "do_connect")
    def connect(dialect, conn_rec, cargs, cparams):
        deadline, delay = clock() + wait, FIRST_DELAY
        while True:
            try:
                return dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as e:
                if clock() + delay > deadline:
                    say(f"database: cannot connect for {wait:g} s, giving up: {e}")
                    raise
                say(f"database: cannot connect ({str(e).strip()}); trying again in {delay:g} s")
                sleep(delay)
                delay = min(delay * 2, MAX_DELAY)


class ReconnectingDatabase(service.BuildbotService):
    """Applies :func:`reconnecting` to the master's engine on PostgreSQL once the database is set up
    (services start after it); SQLite is a file that does not restart."""

    name = "db-reconnect"

    def startService(self):
        engine = bb.database_engine(self.master)
        if engine.dialect.name == "postgresql" and not getattr(engine, "_bbk_reconnecting", False):
            reconnecting(engine)
            engine._bbk_reconnecting = True
        return super().startService()
