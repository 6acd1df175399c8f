"""The worker side of "one copy of the history per host": each worker keeps one object store per
repository, shared by all its branch builders, and their checkouts borrow it (git alternates, written
when the ``update-tree`` step makes a checkout).

The store is ``<worker basedir>/git-stores/<repository>.git``, a bare repository filled by plain
``git fetch`` of the branch being built (so a remote worker host fetches each object over the network
once, whatever number of builders it runs). On the master's own host the master's store (the bisect
mirror, see :mod:`buildbot_kernel.bisect.mirror`) exists at the path the master names, and the worker's
store borrows it in turn: one copy on that host. Like the master's store, a worker's store never prunes
an object (its borrowers' commits may live only there). An existing checkout made before this store
existed is made to borrow it once (``repack -a -d -l`` drops its own copies).

The scripts run on the worker (any POSIX shell with git; ``flock`` from util-linux when present, so two
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


# The branch build's ``update-tree`` step: the store above, then the checkout, in ONE command on the worker.
# Buildbot's Git step took eight round trips to the master per build (version, patched?, listdir, cat-file,
# checkout, checkout -B, rev-parse, plus the store's own step), each with its log writes in the master's
# database; on a busy master that was seconds per build. $1 the store script above, $2.. its arguments
# ($2 store, $3 url, $4 branch, $5 the master's store, $6 checkout), $7 the revision ("" = the branch's
# head). Prints ``store=<path>`` (empty when the store could not be updated: the checkout then fetches
# on its own) and ``got_revision=<sha>``.
CHECKOUT_SCRIPT = r"""set -e
store_script=$1 store=$2 url=$3 branch=$4 shared=$5 checkout=$6 rev=$7
case "$rev" in -*) echo "error: revision '$rev' starts with '-', which git would read as an option" >&2; exit 2;; esac
if ref=$(sh -c "$store_script" worker-store "$store" "$url" "$branch" "$shared" "$checkout"); then
    echo "store=$ref"
else
    echo "store="
    echo "warning: the worker's store could not be updated; the checkout fetches on its own" >&2
    ref=
fi
if [ ! -d "$checkout/.git" ]; then
    rm -rf "$checkout"
    git init -q "$checkout"
    if [ -n "$ref" ]; then echo "$ref/objects" > "$checkout/.git/objects/info/alternates"; fi
fi
cd "$checkout"
if [ -z "$rev" ] || ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
    git fetch -f --progress --end-of-options "$url" "$branch"
    [ -n "$rev" ] || rev=$(git rev-parse FETCH_HEAD)
fi
git -c advice.detachedHead=false checkout -q -f "$rev"
git checkout -q -B "$branch"
echo "got_revision=$(git rev-parse HEAD)"
"""


def store_relpath(repository: str) -> str:
    """The worker's store, relative to a step's workdir ``work`` (``<basedir>/<builder>/work``)."""
    return f"../../{STORES}/{re.sub(r'[^A-Za-z0-9_.-]', '_', repository)}.git"


def checkout_command(repository: str, url: str, branch: str, master_store: str, revision: str | None,
                     checkout: str = "src") -> list[str]:
    """The store's update and the checkout of ``revision`` (None: the branch's head) as one command."""
    return ["sh", "-c", CHECKOUT_SCRIPT, "update-tree", SCRIPT, store_relpath(repository), url, branch,
            master_store, checkout, revision or ""]
