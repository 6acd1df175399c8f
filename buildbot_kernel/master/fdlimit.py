"""The master's descriptor budget: every listener's cap, plus room for the work itself.

A connection is a descriptor, and so is every open log, database connection, git pipe, image file being
served or written and spooled upload.  The web UI, the worker port and the image server refuse
connections past their totals; those totals have to stay well below the process's open-file limit, or a
flood on one listener still leaves the others (and the builds) without descriptors.  Most systems start
a process with a soft limit of 1024 and a much higher hard limit, so the master raises its soft limit
to ``ROOM`` times what it needs, within the hard one (the systemd unit sets both with ``LimitNOFILE=``).
Not to the hard limit itself: every child inherits it (QEMU, farm power commands, test commands), and
programs that use ``select()`` or close every descriptor up to the limit break or crawl at a million.
"""

from __future__ import annotations

from twisted.python import log

from buildbot_kernel.imagetree.httpguard import TOTAL_LIMIT as IMAGE_TOTAL
from buildbot_kernel.master.listeners import WEB_TOTAL, WORKER_TOTAL

WORK_RESERVE = 1024  # descriptors kept for builds, logs, the database and tree work
WANTED = IMAGE_TOTAL + WEB_TOTAL + WORKER_TOTAL + WORK_RESERVE  # README "Images" (descriptor budget)
ROOM = 4  # the soft limit the master asks for: this many times WANTED (never lowered)


def raise_open_files(wanted: int = WANTED) -> int | None:
    """Raise the soft open-file limit to ``ROOM * wanted`` within the hard one; the soft limit now (None
    where there is none).  Logs when it stays below ``wanted``: the caps then no longer keep a flood from
    starving the rest."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        target = ROOM * wanted if hard == resource.RLIM_INFINITY else min(hard, ROOM * wanted)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as e:
                log.msg(f"cannot raise the open-file limit from {soft} to {target}: {e}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.msg(f"open-file limit {soft} is below the {wanted} the listeners' caps and the builds need "
                f"(README \"Images\"); raise it (systemd: LimitNOFILE=)")
    return soft
