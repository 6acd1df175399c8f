"""Suite-wide ordering, and a temporary directory the tree's readers can reach.

The farm tests run the global Twisted reactor in a background thread (their QEMU machines talk to a real
HTTP server while the test thread waits).  Once it runs there, twisted.trial TestCases (Buildbot's step
tests and the image-service tests) can no longer spin it, so tests/farm/ runs last; the sort is stable,
so every other test keeps its order and module fixtures stay grouped.
"""

import os
import shutil
import warnings
from pathlib import Path

import pytest

# buildbot.test (imported by the step tests) turns every warning into an error for the rest of the
# process.  Twisted 26.10 deprecates a name that buildbot.util.ssl star-imports, so whichever module first
# imports Buildbot's mail reporter after that (the notification wiring, the force scheduler) would fail to
# import.  Importing it once here, before any test module, keeps that one deprecation a warning.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import buildbot.util.ssl  # noqa: F401
# pygal (the dashboard's charts) puts an import hook without find_spec on sys.meta_path, so every later
# import that reaches it warns (ImportWarning); under buildbot.test's filter that warning fails whichever
# test module imports next.  Take buildbot.test's filter now and put this one warning before it.
import buildbot.test  # noqa: E402,F401

warnings.filterwarnings("ignore", category=ImportWarning, message=r"PluginImportFixer")

from buildbot_kernel.imagetree.testing import served_dir  # noqa: E402

FARM = Path(__file__).parent / "farm"
# the farm's stage-1 kernel and ramfs (fetched and built once): the checkout's .cache, not the user's
# cache directory, unless the caller chose one (buildbot_kernel/resources.py)
os.environ.setdefault("BUILDBOT_KERNEL_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))
# other modules that serve a farm from that reactor thread
REACTOR_THREAD_MODULES = tuple(Path(__file__).parent / "security" / m
                               for m in ("test_machine_keys.py", "test_secrets_and_dos.py"))


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(FARM)
               or Path(str(item.path)) in REACTOR_THREAD_MODULES)


@pytest.fixture
def served_tmp_path():
    """A directory www-data and nobody can reach (pytest's tmp_path is under a 0700 directory), removed
    afterwards."""
    d = served_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)
