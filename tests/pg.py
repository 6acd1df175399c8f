"""A real, throwaway PostgreSQL server for the tests that run the master on PostgreSQL.

Debian's ``postgresql`` package (scripts/install-deps) provides ``initdb`` and ``pg_ctl``; the server
listens on a unix socket in a temporary directory only (``listen_addresses=''``), so nothing is reachable
over the network, and it is gone when the session ends.  PostgreSQL refuses to run as root, so as root
the commands run as the ``postgres`` user and the directory belongs to it.  One server per test session;
each test that wants a database asks for its own with :meth:`PgServer.create_database`.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_USER = "postgres"
# parametrize a test master over these: SQLite (the default) and "pg", marked `postgres` (deselect with -m)
DB_BACKENDS = ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)]


def pg_bindir() -> Path | None:
    """The newest installed server's bin directory (the version is in the path on Debian)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # not under pytest's tmp_path: its parents are private to root and the postgres user must reach
        # the socket directory
        self.base = Path(tempfile.mkdtemp(prefix="bbk-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.socket_dir.mkdir()
        if self.as_root:
            pw = pwd.getpwnam(PG_USER)
            for p in (self.base, self.socket_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.base.chmod(0o755)
        self.role = PG_USER if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.serial = 0

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / cmd[0]), *cmd[1:]]
        if self.as_root:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.base)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def start(self):
        self._run("initdb", "-D", str(self.data), "-U", self.role, "-A", "trust", "-E", "UTF8",
                  "--no-instructions")
        # throwaway: no fsync; socket only; -w waits until it accepts connections
        opts = f"-c listen_addresses='' -k {self.socket_dir} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.base / "server.log"),
                  "-o", opts)

    def restart(self):
        """``pg_ctl restart -m fast``: every connection is terminated, the server comes back with the same
        options (as an admin's restart or a package upgrade does)."""
        self._run("pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", str(self.data), "-l",
                  str(self.base / "server.log"))

    def stop(self):
        self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data), check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, hint: str = "test") -> str:
        """A new empty database; its SQLAlchemy URL for the psycopg 3 driver."""
        self.serial += 1
        name = f"{re.sub(r'[^a-z0-9_]', '_', hint.lower())[:40]}_{self.serial}"
        self._run("createdb", "-h", str(self.socket_dir), "-U", self.role, name)
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.role}@/{database}?host={self.socket_dir}"

    def log_tail(self, n: int = 3000) -> str:
        log = self.base / "server.log"
        return log.read_text()[-n:] if log.exists() else ""


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (skipped with the reason when the package is missing)."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: install Debian's postgresql (scripts/install-deps)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg (3) is not installed: pip install -e . (pyproject.toml lists psycopg[binary])")
    server = PgServer(bindir)
    try:
        server.start()
    except RuntimeError:
        server.stop()
        raise
    yield server
    server.stop()


def db_url_for(request, hint: str) -> str | None:
    """For a fixture parametrized over DB_BACKENDS: None for SQLite (the master's default file), else a new
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database(hint)
