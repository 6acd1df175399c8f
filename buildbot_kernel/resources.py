"""The files buildbot-kernel ships inside its package, and where it keeps what it caches.

Templates, the stage-1/stage-2 scripts, ``master.cfg`` and the example ``settings.toml`` are package
data (``buildbot_kernel/templates``, ``scripts``, ``data``), so an installed wheel has them wherever it
is installed; they are found through :mod:`importlib.resources`, never relative to a checkout.  The
cache (the farm's stage-1 kernel and ramfs) is ``$BUILDBOT_KERNEL_CACHE`` if set, else
``$XDG_CACHE_HOME/buildbot-kernel`` (``~/.cache/buildbot-kernel``); README.md, "Files and directories".
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from buildbot_kernel.errors import BuildbotKernelError

CACHE_ENV = "BUILDBOT_KERNEL_CACHE"


class MissingResource(BuildbotKernelError, RuntimeError):
    """A file that should ship with the package is not there: the installation is incomplete."""


def package_path(*parts: str) -> Path:
    """A shipped file or directory as a real path (templates are read by jinja2's FileSystemLoader and
    scripts are executed, so a path on disk is needed, not just a readable resource)."""
    ref = resources.files("buildbot_kernel")
    for part in parts:
        ref = ref / part
    path = Path(str(ref))
    if not path.exists():
        raise MissingResource(f"{path} is missing: buildbot-kernel is installed without its package data "
                              f"(reinstall it from a wheel or the checkout)")
    return path


def templates_dir() -> Path:
    return package_path("templates")


def scripts_dir() -> Path:
    return package_path("scripts")


def shipped(name: str) -> Path:
    """``master.cfg`` or the example ``settings.toml``."""
    return package_path("data", name)


def cache_dir(environ=os.environ) -> Path:
    """The user's cache for buildbot-kernel (created by whoever writes into it)."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "buildbot-kernel"


def state_dir(environ=os.environ) -> Path:
    """The user's state for buildbot-kernel: which master ``run`` last started (``stop`` reads it)."""
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "buildbot-kernel"
