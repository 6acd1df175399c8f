"""Suite-wide ordering.

The farm tests run the global Twisted reactor in a background thread (their QEMU machines talk to a real
HTTP server while the test thread waits).  Once it runs there, twisted.trial TestCases (Buildbot's step
tests and the image-service tests) can no longer spin it, so tests/farm/ runs last; the sort is stable,
so every other test keeps its order and module fixtures stay grouped.
"""

from pathlib import Path

FARM = Path(__file__).parent / "farm"
# other modules that serve a farm from that reactor thread
REACTOR_THREAD_MODULES = (Path(__file__).parent / "security" / "test_machine_keys.py",)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(FARM)
               or Path(str(item.path)) in REACTOR_THREAD_MODULES)
