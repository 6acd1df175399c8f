"""Suite-wide ordering, and a temporary directory the tree's readers can reach.

The farm tests run the global Twisted reactor in a background thread (their QEMU machines talk to a real
HTTP server while the test thread waits).  Once it runs there, twisted.trial TestCases (Buildbot's step
tests and the image-service tests) can no longer spin it, so tests/farm/ runs last; the sort is stable,
so every other test keeps its order and module fixtures stay grouped.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

FARM = Path(__file__).parent / "farm"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(FARM))


def served_dir(prefix: str = "bbk-served-") -> Path:
    """A fresh 0755 directory in the system temp dir (whose parents everyone can enter).

    pytest's tmp_path lies under a 0700 directory, so a web server's ``www-data`` or NFS's ``nobody``
    could never reach a tree there, however correct the tree's own modes are.  The caller removes it.
    """
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def served_tmp_path():
    """``served_dir`` for one test, removed afterwards."""
    d = served_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)
