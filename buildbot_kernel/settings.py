"""The one settings file, read and validated before Buildbot sees any of it.

Every problem is reported at ``buildbot checkconfig`` time with the file, the key and what was expected,
and all problems are reported at once, so an admin fixes a file in one pass instead of one error per
restart.  The schema is data (``SECTIONS``/``TABLES`` below) so a new key is one line, and unknown keys
are errors: a typo such as ``poll_intervall`` must not silently fall back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildbot_kernel.farm import keys

ENV_VAR = "BUILDBOT_KERNEL_SETTINGS"
PACKAGE_FORMATS = ("tar", "deb")
MACHINE_TYPES = ("qemu", "remote")


class SettingsError(Exception):
    """All problems of one settings file; ``str()`` lists each on its own line."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class Key:
    """One allowed key: its type(s), default (``REQUIRED`` if none) and an extra check."""

    types: tuple
    default: Any
    expect: str  # said in the error: "expected <expect>"
    check: Any = None  # callable(value) -> bool


REQUIRED = object()


def _port(v):
    return 0 <= v <= 65535


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _str_list(v, allow_empty=True):
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v) and (allow_empty or v)


SECTIONS: dict[str, dict[str, Key]] = {
    "server": {
        "title": Key((str,), "buildbot-kernel", "a string"),
        "web_port": Key((int,), 8010, "a TCP port number 1-65535", lambda v: 1 <= v <= 65535),
        "worker_port": Key((int,), 9989, "a TCP port number 1-65535", lambda v: 1 <= v <= 65535),
        "image_port": Key((int,), 8011, "a TCP port number 0-65535 (0 = off)", _port),
        "url": Key((str,), "", "the public URL of the web UI, e.g. \"http://buildbot.example.org:8010/\""),
        "db_url": Key((str,), "sqlite:///state.sqlite", "an SQLAlchemy database URL"),
        "bind": Key((str,), "127.0.0.1", "an address to listen on (\"0.0.0.0\" for every interface)"),
    },
    "images": {
        "root": Key((str,), "images", "a directory path (relative to the master directory)"),
        "base_url": Key((str,), "", "an http(s) URL under which the image root is served"),
        "keep_per_branch": Key((int,), 0, "a whole number >= 0 (0 = keep all)", _non_negative),
        "max_bytes": Key((int,), 0, "a whole number of bytes >= 0 (0 = no budget)", _non_negative),
        "debounce": Key((int, float), 1.0, "seconds >= 0", _non_negative),
        "watch": Key((str,), "inotify", "one of inotify, poll (an NFS tree other hosts write to), off",
                     lambda v: v in ("inotify", "poll", "off")),
    },
}

TABLES: dict[str, dict[str, Key]] = {
    "repository": {
        "name": Key((str,), REQUIRED, "a non-empty name", bool),
        "url": Key((str,), REQUIRED, "a git URL or path", bool),
        "branches": Key((list,), REQUIRED, "a non-empty list of branch names",
                        lambda v: _str_list(v, allow_empty=False)),
        "poll_interval": Key((int,), 300, "a whole number of seconds > 0", _positive),
        "build": Key((str,), REQUIRED, "the name of a [[build]] table", bool),
    },
    "build": {
        "name": Key((str,), REQUIRED, "a non-empty name", bool),
        "arch": Key((str,), "x86_64", "a kernel ARCH such as x86_64 or arm64", bool),
        "config": Key((str,), "defconfig", "a make target ending in 'config' or a path to a full .config",
                      bool),
        "fragments": Key((list,), [], "a list of config fragment paths", _str_list),
        "packages": Key((list,), ["tar"], f"a list drawn from {list(PACKAGE_FORMATS)}",
                        lambda v: _str_list(v) and set(v) <= set(PACKAGE_FORMATS)),
        "cross_compile": Key((str,), "", "a CROSS_COMPILE prefix such as aarch64-linux-gnu-"),
        "ccache": Key((bool,), True, "true or false"),
        "jobs": Key((int,), 0, "a whole number >= 0 (0 = the worker's cpus)", _non_negative),
        "timeout": Key((int,), 7200, "seconds > 0 without output before a build step is killed",
                       _positive),
    },
    "worker": {
        "name": Key((str,), REQUIRED, "a non-empty name", bool),
        "password": Key((str,), REQUIRED, "a non-empty password", bool),
        "max_builds": Key((int,), 1, "a whole number > 0", _positive),
    },
    "machine": {
        "name": Key((str,), REQUIRED, "a non-empty name", bool),
        "type": Key((str,), "remote", f"one of {list(MACHINE_TYPES)}", lambda v: v in MACHINE_TYPES),
        "soft_reboot": Key((str,), "", "a shell command that reboots the machine"),
        "power_cycle": Key((str,), "", "a shell command that power-cycles the machine"),
        "boot_timeout": Key((int,), 300, "seconds > 0", _positive),
        "retries": Key((int,), 2, "a whole number >= 0", _non_negative),
        "install_modules": Key((bool,), False, "true or false"),
        "cmdline": Key((str,), "", "extra kernel command line for the candidate kernel"),
        "memory": Key((int,), 1024, "MiB of guest memory (qemu machines)", _positive),
        "accel": Key((str,), "auto", "one of auto, kvm, tcg", lambda v: v in ("auto", "kvm", "tcg")),
        "stage1_kernel": Key((str,), "", "a path to the stage-1 kernel (qemu machines)"),
        "stage1_initrd": Key((str,), "", "a path to the stage-1 ramfs (qemu machines)"),
        "disk": Key((str,), "", "a path to the machine's local root disk image (qemu machines)"),
        "test_timeout": Key((int,), 600, "seconds > 0 the test command may run before the machine is "
                            "power-cycled", _positive),
        "poll": Key((int,), 5, "seconds > 0 between a waiting machine's requests for instructions",
                    _positive),
        "server_url": Key((str,), "", "the server's URL as the machine reaches it (default: images.base_url; "
                          "qemu: http://10.0.2.2:<image_port>)"),
        "initrd": Key((str,), "", "a path to an initrd given to every candidate (the local OS of a diskless "
                      "machine; qemu default: stage1_initrd)"),
        "nic": Key((str,), "virtio", "the QEMU network device: virtio or e1000 (qemu machines)",
                   lambda v: v in ("virtio", "e1000")),
        "key_file": Key((str,), "", "a path to the machine's secret key file, relative to the settings file "
                        "(qemu default: generated under the master's state directory)"),
    },
}


@dataclass(frozen=True)
class Settings:
    """Validated settings; tables are lists of dicts with every default filled in."""

    path: str
    server: dict
    images: dict
    repositories: list = field(default_factory=list)
    builds: list = field(default_factory=list)
    workers: list = field(default_factory=list)
    machines: list = field(default_factory=list)

    def build(self, name: str) -> dict:
        for b in self.builds:
            if b["name"] == name:
                return b
        raise KeyError(name)

    def repository(self, name: str) -> dict:
        for r in self.repositories:
            if r["name"] == name:
                return r
        raise KeyError(name)

    def machine(self, name: str) -> dict:
        for m in self.machines:
            if m["name"] == name:
                return m
        raise KeyError(name)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent


def is_config_file(config: str) -> bool:
    """``config`` names a full .config file (a path) rather than a make target such as ``defconfig``."""
    return not config.endswith("config") or "/" in config or config.startswith(".")


def _type_name(v) -> str:
    return {bool: "a boolean", int: "a whole number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _check_table(where: str, raw: Any, schema: dict[str, Key], problems: list[str]) -> dict:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, got {_type_name(raw)}")
        return {}
    out = {}
    for key in raw:
        if key not in schema:
            problems.append(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(schema))})")
    for key, spec in schema.items():
        if key not in raw:
            if spec.default is REQUIRED:
                problems.append(f"{where}.{key}: missing; expected {spec.expect}")
            else:
                out[key] = list(spec.default) if isinstance(spec.default, list) else spec.default
            continue
        v = raw[key]
        # bool is an int in Python; a port of `true` is still a mistake
        ok_type = isinstance(v, spec.types) and not (isinstance(v, bool) and bool not in spec.types)
        if not ok_type or (spec.check is not None and not spec.check(v)):
            problems.append(f"{where}.{key}: expected {spec.expect}, got {v!r}")
            continue
        out[key] = v
    return out


def parse(text: str, path: str = "settings.toml") -> Settings:
    """Validate settings text; ``path`` is used in messages and to resolve relative fragment paths."""
    problems: list[str] = []
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(path, [f"not valid TOML: {e}"]) from None

    for key in raw:
        if key not in SECTIONS and key not in TABLES:
            problems.append(
                f"unknown section '{key}' (allowed: [{'], ['.join(SECTIONS)}], "
                f"[[{']], [['.join(TABLES)}]])"
            )
    sections = {name: _check_table(f"[{name}]", raw.get(name, {}), schema, problems)
                for name, schema in SECTIONS.items()}
    tables: dict[str, list[dict]] = {}
    for name, schema in TABLES.items():
        items = raw.get(name, [])
        if not isinstance(items, list):
            problems.append(f"[[{name}]]: expected an array of tables ([[{name}]]), got {_type_name(items)}")
            items = []
        checked = []
        for i, item in enumerate(items):
            label = item.get("name") if isinstance(item, dict) else None
            where = f"[[{name}]] #{i + 1}" + (f" ({label!r})" if isinstance(label, str) else "")
            checked.append(_check_table(where, item, schema, problems))
        seen = set()
        for item in checked:
            n = item.get("name")
            if n in seen:
                problems.append(f"[[{name}]]: duplicate name {n!r}; names must be unique")
            seen.add(n)
        tables[name] = checked

    base = Path(path).resolve().parent
    build_names = {b.get("name") for b in tables["build"]}
    if not tables["repository"]:
        problems.append("[[repository]]: none configured; expected at least one repository to watch")
    if not tables["worker"]:
        problems.append("[[worker]]: none configured; expected at least one worker (name, password)")
    for r in tables["repository"]:
        if "build" in r and r["build"] not in build_names:
            problems.append(
                f"[[repository]] ({r.get('name')!r}).build: no [[build]] named {r['build']!r} "
                f"(defined: {sorted(n for n in build_names if n) or 'none'})"
            )
        branches = r.get("branches") or []
        if len(set(branches)) != len(branches):
            problems.append(f"[[repository]] ({r.get('name')!r}).branches: a branch is listed twice")
    for b in tables["build"]:
        if "deb" in b.get("packages", []):
            problems.append(
                f"[[build]] ({b.get('name')!r}).packages: \"deb\" cannot work with the image naming "
                "contract: the kernel release holds '_' (-<branch>_<sha6>_<date>_) and Debian package "
                "names and versions cannot, so bindeb-pkg fails; use [\"tar\"]")
        files = list(b.get("fragments", []))
        if "config" in b and is_config_file(b["config"]):
            files.append(b["config"])
        for f in files:
            p = (base / f) if not os.path.isabs(f) else Path(f)
            if not os.access(p, os.R_OK) or not p.is_file():
                problems.append(f"[[build]] ({b.get('name')!r}): config file {f!r} is not a readable file "
                                f"(looked at {p})")
    for m in tables["machine"]:
        if m.get("type") == "remote" and not m.get("power_cycle"):
            problems.append(f"[[machine]] ({m.get('name')!r}).power_cycle: a remote machine needs a power-cycle "
                            "command (ssh, ipmitool, a PDU) so a hung kernel can be recovered")
        if m.get("type") == "remote" and not m.get("key_file"):
            example = "keys/" + keys.key_file_name(str(m.get("name")))
            problems.append(f"[[machine]] ({m.get('name')!r}).key_file: a remote machine needs a key file (every "
                            f"/machines/ request carries it); {keys.how_to_make(example)}, then set "
                            f"key_file = \"{example}\"")
        elif m.get("key_file"):
            try:
                keys.read_key(base / m["key_file"])
            except keys.KeyFileError as e:
                problems.append(f"[[machine]] ({m.get('name')!r}).key_file: {e}")
    if tables["machine"] and sections["server"].get("image_port") == 0:
        problems.append("[server].image_port: test machines ([[machine]]) fetch boot instructions from the "
                        "embedded server's /machines/; set image_port to a port, not 0")
    ports = [(k, sections["server"].get(k)) for k in ("web_port", "worker_port", "image_port")]
    used = [p for _, p in ports if p]
    if len(set(used)) != len(used):
        problems.append(f"[server]: web_port, worker_port and image_port must differ, got {dict(ports)}")
    if sections["images"].get("base_url") == "":
        sections["images"]["base_url"] = f"http://localhost:{sections['server'].get('image_port') or 80}"
    if problems:
        raise SettingsError(path, problems)
    return Settings(path=path, server=sections["server"], images=sections["images"],
                    repositories=tables["repository"], builds=tables["build"],
                    workers=tables["worker"], machines=tables["machine"])


def load(path: str | os.PathLike) -> Settings:
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SettingsError(path, [f"cannot read the settings file: {e.strerror}"]) from None
    return parse(text, path)


def locate(config_dir: str | os.PathLike, environ=os.environ) -> str:
    """The contract: ``$BUILDBOT_KERNEL_SETTINGS``, else ``settings.toml`` beside master.cfg."""
    return environ.get(ENV_VAR) or os.path.join(str(config_dir), "settings.toml")


def resolve(settings: Settings, p: str) -> Path:
    """A path from the settings file, relative to that file's directory."""
    return Path(p) if os.path.isabs(p) else settings.base_dir / p
