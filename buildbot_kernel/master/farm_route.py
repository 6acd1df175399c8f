"""Work on test machines runs on the master that runs the test farm (README.md "Growing past one machine").

Masters sharing one database may each claim any build request, but the test farm (the machine registry,
``/machines``, the machine drivers) runs on one of them: the one holding ``<state_dir>/farm.lock``.  The
builders whose builds drive machines (a bisect, an image test, a repair) exist on every master, so each
gets a ``canStartBuild`` that refuses, on a master without the farm, a request whose tester is a machine
or a machine class.  Buildbot then leaves the request unclaimed for the farm's master; while that master
is down it waits in the queue (an unclaimed request neither fails nor expires) and the farm's master
claims it when it is back.  A ``local`` tester runs on any master.  With one master (no ``mq_router``)
nothing is routed: there is no other master to wait for, so a machine request on a master without a
farm starts and fails, naming why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel.bisect.request import LOCAL_TESTER
from buildbot_kernel.master.farm_service import FARM_SERVICE

# reads the testers a request names from its properties: testers_of(get), get(property name) -> value
TestersOf = Callable[[Callable[[str], object]], Iterable]


def needs_farm(testers: Iterable) -> bool:
    """Does a request naming these testers need the test farm?  Every tester but ``local`` does (a
    machine, a machine class, or a name this master does not know: only the farm's master can judge it).
    An empty value is ``local``, as a bisect request reads it; the values come from a form or REST, so
    anything that is not a string is judged by its text."""
    return any(str(t or LOCAL_TESTER).strip() != LOCAL_TESTER for t in testers)


def may_start_here(testers: Iterable, farm_here: bool) -> bool:
    """May a master start a request naming ``testers``?  ``farm_here``: the test farm runs in it."""
    return farm_here or not needs_farm(testers)


def farm_here(master) -> bool:
    """Does the test farm run in this master (it holds the farm's lock; the farm itself may still be
    starting, its drivers wait for it)?"""
    farm = bb.named_service(master, FARM_SERVICE)
    return farm is not None and farm.owns_farm


def farm_gate(settings, testers_of: TestersOf):
    """A BuilderConfig ``canStartBuild`` for a builder whose builds may drive machines; None (Buildbot's
    default: start anything) with one master."""
    if not settings.server.mq_router:
        return None

    def can_start(builder, workerforbuilder, request) -> bool:
        testers = testers_of(lambda name: bb.request_property(request, name))
        return may_start_here(testers, farm_here(bb.request_master(request)))

    return can_start
