"""The worker side of "one copy of the history per host": each worker keeps one object store per
repository, shared by all its branch builders, and their checkouts borrow it (the Git step's
``reference``).

The store is ``<worker basedir>/git-stores/<repository>.git``, a bare repository filled by plain
``git fetch`` of the branch being built (so a remote worker host fetches each object over the network
once, whatever number of builders it runs). On the master's own host the master's store (the bisect
mirror, see :mod:`buildbot_kernel.bisect.mirror`) exists at the path the master names, and the worker's
store borrows it in turn: one copy on that host. Like the master's store, a worker's store never prunes
an object (its borrowers' commits may live only there). An existing checkout made before this store
existed is made to borrow it once (``repack -a -d -l`` drops its own copies).

The script runs on the worker (any POSIX shell with git; ``flock`` from util-linux when present, so two
builders of one worker never fetch into the store at once). Every value from the settings reaches it as
a positional argument, never spliced into the script text.
"""

from __future__ import annotations

import re

STORES = "git-stores"

# $1 store (relative to the step's workdir), $2 url, $3 branch, $4 the master's store path, $5 checkout
SCRIPT = r"""set -e
store=$1 url=$2 branch=$3 shared=$4 checkout=$5
mkdir -p "$(dirname "$store")"
if command -v flock >/dev/null 2>&1; then exec 9>"$store.lock"; flock 9; fi
[ -f "$store/HEAD" ] || git init -q --bare "$store"
store=$(cd "$store" && pwd -P)
git -C "$store" config gc.pruneExpire never
borrow() {  # $1 repository (its objects dir), $2 objects dir to borrow
    alt="$1/info/alternates"
    grep -qxF "$2" "$alt" 2>/dev/null && return 0
    mkdir -p "$1/info"
    echo "$2" >> "$alt"
    echo "$1 now borrows the objects of $2" >&2
    return 1
}
if [ -d "$shared/objects" ]; then
    shared=$(cd "$shared" && pwd -P)
    if [ "$shared" != "$store" ] && ! borrow "$store/objects" "$shared/objects"; then
        git -C "$store" repack -a -d -l -q
    fi
fi
git -C "$store" fetch --no-tags --progress --end-of-options "$url" "+refs/heads/$branch:refs/heads/$branch"
if [ -d "$checkout/.git/objects" ] && ! borrow "$checkout/.git/objects" "$store/objects"; then
    git -C "$checkout" repack -a -d -l -q
fi
echo "$store"
"""


def store_relpath(repository: str) -> str:
    """The worker's store, relative to a step's workdir ``work`` (``<basedir>/<builder>/work``)."""
    return f"../../{STORES}/{re.sub(r'[^A-Za-z0-9_.-]', '_', repository)}.git"


def command(repository: str, url: str, branch: str, master_store: str, checkout: str = "src") -> list[str]:
    return ["sh", "-c", SCRIPT, "worker-store", store_relpath(repository), url, branch, master_store, checkout]
