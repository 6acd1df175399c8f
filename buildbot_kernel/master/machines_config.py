"""The ``machines`` builder and its ``repair-machine`` force scheduler: an admin says a broken test
machine works again (README "Repairing a machine").

A machine that keeps failing is marked broken and gets no work until someone has looked at it (power
switch, cable, disk).  Repair is a Buildbot force scheduler so that it is reachable from the web UI, from
REST (``buildbot-kernel machine repair``), is authorized by ``www.authz`` like every other control (it
is admin-only, as every force scheduler but the branch builds, heads and bisect), and leaves a build
in the UI saying who repaired which machine when.  The step runs in the master, where the farm's
registry lives; the control worker only hosts the build.
"""

from __future__ import annotations

from buildbot.plugins import schedulers, util
from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SUCCESS

from buildbot_kernel.buildbot_adapter import named_service
from buildbot_kernel.master import forms
from buildbot_kernel.master.farm_service import FARM_SERVICE

MACHINES_BUILDER = "machines"
REPAIR_SCHEDULER = "repair-machine"


class RepairMachine(buildstep.BuildStep):
    """Back to ``idle``: broken reason, flag and failure streak cleared."""

    name = "repair"

    def run(self):
        machine = self.getProperty("machine")
        farm = named_service(self.master, FARM_SERVICE)
        try:
            if farm is None:
                raise RuntimeError("no test farm in this master (no [[machine]] in the settings)")
            before = farm.repair(machine)
        except (KeyError, RuntimeError) as e:
            self.descriptionDone = [f"cannot repair {machine}: {str(e).strip(chr(39))}"]
            return FAILURE
        self.descriptionDone = [f"repaired {machine} (was {before})"]
        return SUCCESS


def repaired_machine(get) -> list:
    """The machine a repair request names (master/farm_route.py: repairs run on the farm's master)."""
    return [get("machine")]


def add_machines(c: dict, machines: list[str], worker: str, can_start=None) -> None:
    """The builder and its scheduler, when there are test machines; ``worker`` hosts the builds,
    ``can_start`` is the builder's ``canStartBuild``."""
    if not machines:
        return
    no_source = forms.no_source()
    c["builders"].append(util.BuilderConfig(
        name=MACHINES_BUILDER, workernames=[worker], factory=util.BuildFactory([RepairMachine()]),
        tags=["control", "machines"], canStartBuild=can_start,
        description="test machine administration (admins only): repair"))
    c["schedulers"].append(schedulers.ForceScheduler(
        name=REPAIR_SCHEDULER, builderNames=[MACHINES_BUILDER], label="Repair a test machine",
        buttonName="Repair", codebases=[no_source],
        reason=forms.reason("repaired", label="what was fixed", size=60),
        properties=[util.ChoiceStringParameter(name="machine", label="machine", choices=machines,
                                               default=machines[0], strict=True)]))
