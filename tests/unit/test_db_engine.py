"""The master's SQLite engine, made by Buildbot's own engine strategy with our engine_kwargs: one open
connection serves query after query (Buildbot's NullPool opened the file for every query), from the
database thread as well as the thread that made it."""

from __future__ import annotations

import threading

from buildbot.db import enginestrategy

from buildbot_kernel.master.dbreconnect import engine_kwargs, sqlite_file


def _engine(tmp_path, url="sqlite:///state.sqlite"):
    return enginestrategy.create_engine(url, basedir=str(tmp_path), **engine_kwargs(url))


def _dbapi(engine):
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1").fetchall()
        return conn.connection.dbapi_connection


def test_one_connection_serves_every_query_of_every_thread(tmp_path):
    engine = _engine(tmp_path)
    first = _dbapi(engine)
    assert _dbapi(engine) is first  # kept open, not reopened per query
    seen = []
    t = threading.Thread(target=lambda: seen.append(_dbapi(engine)))
    t.start()
    t.join(30)
    assert seen == [first]  # made on this thread, used by another (the master's database thread)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"  # Buildbot's set-up is kept
    engine.dispose()


def test_two_threads_at_once_each_get_a_connection(tmp_path):
    engine = _engine(tmp_path)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table t (x integer)")
    inside, release, errors = threading.Event(), threading.Event(), []

    def hold():
        with engine.connect() as conn:
            conn.exec_driver_sql("select count(*) from t").fetchall()
            inside.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(30)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("insert into t values (1)")
    except Exception as e:  # noqa: BLE001 - the assertion below names it
        errors.append(e)
    release.set()
    t.join(30)
    assert errors == []
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from t").scalar() == 1
    engine.dispose()


def test_only_an_sqlite_file_is_pooled_here():
    assert sqlite_file("sqlite:///state.sqlite") and sqlite_file("sqlite:////var/lib/bb/state.sqlite")
    assert not sqlite_file("sqlite://") and not sqlite_file("sqlite:///:memory:")
    assert engine_kwargs("sqlite://") == {}  # Buildbot's single in-memory connection stays as it is
    assert engine_kwargs("postgresql+psycopg://bb@/bb") == {"pool_pre_ping": True}
    assert not sqlite_file("not a url")
