"""Test machine types as data: one ``<name>.ini`` beside this module per type (docs/machine-types.md).

A type says how the farm powers a ``[[machine]]`` (the module of this package named by ``power``, which
makes the object the driver calls ``soft_reboot()`` and ``power_cycle()`` on), which settings keys such a
machine must set, whether the machine reaches the server through QEMU's guest address, whether its key
may be generated and whether it boots the built-in stage-1 kernel.  Settings validation and the farm
factory read this registry, so a new type is one ``.ini`` file (plus its power module when none of the
existing ones fits) and its tests, never a new branch in the farm code.
"""

from __future__ import annotations

import configparser
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from buildbot_kernel import descriptions
from buildbot_kernel.errors import BuildbotKernelError

HERE = Path(__file__).resolve().parent
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
_MODULE_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")


class MachineTypeError(BuildbotKernelError, ValueError):
    """A machine type description is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class MachineType:
    name: str
    description: str
    power: str                                   # module of this package with make_power(setup)
    required: Mapping[str, str] = field(default_factory=dict)  # [[machine]] key -> why it must be set
    guest_address: str = ""                      # the server's host as the machine sees it ("" = base_url's)
    generated_key: bool = False                  # no key_file: one is generated under the master's state
    builtin_stage1: bool = False                 # stage1_kernel/initrd default to the built-in stage 1

    def module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.power}")

    def problems(self, machine: Mapping) -> list[str]:
        """What is wrong with a ``[[machine]]`` of this type (``"<key>: <why>"`` each), as the settings
        validation reports it."""
        out = [f"{key}: {why}" for key, why in self.required.items() if machine.get(key) in (None, "")]
        check = getattr(self.module(), "problems", None)
        return out + (list(check(machine)) if check is not None else [])


@dataclass(frozen=True)
class PowerSetup:
    """What a power module's ``make_power(setup)`` gets: the validated ``[[machine]]`` table, its key, the
    server URL as the machine reaches it, a work directory of its own, the resolved stage-1 kernel and
    ramfs (builtin_stage1 types), the resolved ``disk`` and a callback for what the machine learned
    about itself (a QEMU accelerator)."""

    machine: Mapping
    key: str
    server_url: str
    workdir: Path
    stage1_kernel: str = ""
    stage1_initrd: str = ""
    disk: str = ""
    on_accel: object = None


def load(path: Path) -> MachineType:
    """One description file -> MachineType; MachineTypeError names the file and key on any problem."""
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise MachineTypeError(f"{path.name}: cannot read: {e}") from None
    name = path.stem
    if not _NAME_RE.match(name):
        raise MachineTypeError(f"{path.name}: a machine type name is lowercase letters, digits, '-' and '_'")
    if not cp.has_section("type"):
        raise MachineTypeError(f"{path.name}: no [type] section")
    s = cp["type"]
    for key in ("description", "power"):
        if not s.get(key, "").strip():
            raise MachineTypeError(f"{path.name}: [type] {key} is missing or empty")
    power = s["power"].strip()
    if not _MODULE_RE.match(power) or not (HERE / f"{power}.py").is_file():
        raise MachineTypeError(f"{path.name}: [type] power names no module of buildbot_kernel.machinetypes "
                               f"(got {power!r})")
    flags = {}
    for key in ("generated_key", "builtin_stage1"):
        try:
            flags[key] = s.getboolean(key, fallback=False)
        except ValueError:
            raise MachineTypeError(f"{path.name}: [type] {key} must be true or false") from None
    required = dict(cp["required"]) if cp.has_section("required") else {}
    return MachineType(name=name, description=s["description"].strip(), power=power,
                       required={k: " ".join(v.split()) for k, v in required.items()},
                       guest_address=s.get("guest_address", "").strip(), **flags)


def registry(directory: Path = HERE) -> dict[str, MachineType]:
    """Every machine type of ``directory`` by name (a few small files: read when asked, no cache)."""
    return descriptions.read_all(directory, load)


def names() -> tuple[str, ...]:
    return tuple(registry())


def get(name: str) -> MachineType:
    return descriptions.pick(registry(), name, MachineTypeError, "machine type")
