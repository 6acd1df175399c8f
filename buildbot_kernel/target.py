"""What one branch builder builds: a repository branch with a build config, and where images go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from buildbot_kernel.naming import safe_branch
from buildbot_kernel.settings import Build
from buildbot_kernel.util import identifier


@dataclass(frozen=True)
class BuildTarget:
    repository: str  # the settings name of the repository
    url: str  # its git URL
    branch: str
    build: Build = field(hash=False)  # the [[build]] (docs/settings.md)
    images_root: str = ""  # absolute path of the image tree on the master
    state_dir: str = ""  # absolute path of the master's state directory (ledger, bisects)

    @property
    def build_name(self) -> str:
        return self.build.name

    @property
    def branch_dir(self) -> Path:
        return Path(self.images_root) / safe_branch(self.branch)

    @property
    def ledger_path(self) -> Path:
        return Path(self.state_dir) / "ledger.jsonl"

    @property
    def poller_dir(self) -> Path:
        """The GitPoller's bare repository of this target's repository (it fetches the branches there)."""
        return poller_dir(self.state_dir, self.repository)


def poller_dir(state_dir: str, repository: str) -> Path:
    return Path(state_dir) / "gitpoller" / identifier(repository)


def builder_name(target_repo: str, branch: str, unique_branch: bool) -> str:
    """Builders read like the seed's branch list: the branch alone unless two repositories share it."""
    return branch if unique_branch else f"{target_repo}:{branch}"
