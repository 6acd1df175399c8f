"""Shared fixtures: a tree of fixture images and the embedded server running in its own process."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildbot_kernel.imagetree.testing import ServerProcess


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """serve(root, *options) -> base URL of a running embedded server for that root (stopped after the
    module); its access log is ``<root>/../access.log``, its own log ``<root>/../server.out``."""
    servers = []

    def start(root, *options):
        s = ServerProcess(root, Path(root).parent / "access.log", *options)
        servers.append(s)
        return s.url

    yield start
    for s in servers:
        s.stop()
