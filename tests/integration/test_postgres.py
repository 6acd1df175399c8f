"""Moving a master to PostgreSQL the ways README.md "Growing past one machine" says: an empty database
is refused until ``buildbot upgrade-master``, and ``buildbot copy-db`` carries a SQLite master's history
over so that nothing is built again.  (The pipeline and bisect tests run on PostgreSQL too.)"""

from __future__ import annotations

import pytest

from .harness import BIN, FixtureRepo, Master, Worker, free_port, settings_text, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
BRANCHES = ("drm-intel-fixes", "drm-intel-next")


def test_an_empty_database_is_refused_until_upgrade_master(tmp_path, postgres):
    url = postgres.create_database("empty")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    repo = FixtureRepo(tmp_path, BRANCHES)
    master = Master(tmp_path, settings_text(str(repo.bare), BRANCHES, ports, db_url=url))
    refused = master._run(BIN / "buildbot", "start", str(master.dir), check=False)
    assert refused.returncode != 0
    assert "upgrade-master" in master.log_tail(20000)
    master._run(BIN / "buildbot", "upgrade-master", str(master.dir))
    try:
        master.start(ports["web"])
        assert {b["name"] for b in master.get("builders")["builders"]} >= set(BRANCHES)
    finally:
        master.stop()


def test_copy_db_moves_a_sqlite_master_without_rebuilding(tmp_path, postgres):
    repo = FixtureRepo(tmp_path, BRANCHES)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(str(repo.bare), BRANCHES, ports))
    worker = Worker(tmp_path, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    try:
        heads = master.builder_id("heads")
        wait_for(lambda: len([b for b in master.builds() if b["builderid"] != heads and b["complete"]]) == 2
                 and master.idle(), 120, "both heads to be built on SQLite")
        before = [(b["buildid"], b["builderid"], b["results"]) for b in master.builds()]
        master.stop()
        url = postgres.create_database("copied")
        master._run(BIN / "buildbot", "copy-db", "-q", url, str(master.dir))
        (master.dir / "settings.toml").write_text(settings_text(str(repo.bare), BRANCHES, ports, db_url=url))
        master.start(ports["web"])
        # the history is there, and the startup heads check finds every head built
        wait_for(lambda: len(master.builds("heads")) > len([b for b in before if b[1] == heads]) and master.idle(),
                 120, "the startup heads check on PostgreSQL")
        after = master.builds()
        assert [(b["buildid"], b["builderid"], b["results"]) for b in after[:len(before)]] == before
        assert [b for b in after[len(before):] if b["builderid"] != heads] == []
    finally:
        worker.stop()
        master.stop()
