"""The one settings file, read and validated before Buildbot sees any of it (contract: docs/settings.md).

Every problem is reported at ``buildbot checkconfig`` time with the file, the key and what was expected,
and all problems are reported at once, so an admin fixes a file in one pass instead of one error per
restart.  Unknown keys are errors: a typo such as ``poll_intervall`` must not silently fall back to a
default.

The schema is data (``SECTIONS``/``OPTIONAL_SECTIONS``/``TABLES`` below) and the only place a key's type,
default and error text are written: each section and table entry is handed to the rest of the code as a
frozen dataclass generated from it (``ServerSettings``, ``Machine``, ...), read by attribute
(``machine.retries``), so a new key is one ``Key(...)`` line plus its use and no reader restates a default.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import keyword
import operator
import os
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildbot_kernel import formats, htpasswd, machinetypes
from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.farm import instructions, keys
from buildbot_kernel.imagetree import modes
from buildbot_kernel.naming import MAX_BRANCH_CHARS, MAX_COMPONENT, NAME_OVERHEAD, branch_problem, safe_branch
from buildbot_kernel.notify.compose import address_problem, split_hostport
from buildbot_kernel.notify.outbox import OUTBOX as OUTBOX_NAME
from buildbot_kernel.notify.texts import EVENTS as NOTIFY_EVENTS
from buildbot_kernel.util import identifier

ENV_VAR = "BUILDBOT_KERNEL_SETTINGS"
PACKAGE_FORMATS = formats.names()  # one description file each in buildbot_kernel/formats/
MACHINE_TYPES = machinetypes.names()  # one description file each in buildbot_kernel/machinetypes/
TEST_MODES = ("boot", "test")
LOCAL_TESTER = "local"  # the tester name of "run it on a build worker", never a machine's or a class's
ANONYMOUS_ACCESS = ("read", "none")
# --- accounts, roles, listeners (README.md "Putting it on a lab network") ---
# Worker passwords that the shipped settings.toml and README examples show: anyone can read them, so a
# worker port that is not on loopback must not accept them.
SHIPPED_WORKER_PASSWORDS = frozenset({"local-worker", "pass", "password", "pw", "changeme"})
MASTER_STATE = "state"  # the master's own state (its mail outbox), in its directory: never shared, never served
OUTBOX = os.path.join(MASTER_STATE, OUTBOX_NAME)
LISTENERS = ("web_bind", "worker_bind", "image_bind")  # each defaults to [server].bind
DEFAULT_TEST_TIMEOUT = 600


class SettingsError(BuildbotKernelError):
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
    secret: bool = False  # left out of the record's repr (a log line or traceback must not show it)


REQUIRED = object()


def _port(v):
    return 0 <= v <= 65535


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


# A duration beyond a week is a typo; past about 9e9 seconds Python's timers raise (time_t), and an
# infinite one (TOML's inf) killed the index watcher's thread without a word.
MAX_SECONDS = 7 * 24 * 3600
MAX_DEBOUNCE = 3600


def _duration(v):
    return 0 < v <= MAX_SECONDS


def _delay(v):
    return 0 <= v <= MAX_SECONDS


def is_ip_address(text: object) -> bool:
    """``text`` is a literal IP address (v4 or v6) a listener can bind to: no host name, since a name can
    resolve to an address nobody meant to expose."""
    if not isinstance(text, str):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def http_url_problem(text: object) -> str:
    """Why ``text`` is not an absolute http(s) URL with a host, or ""."""
    if not isinstance(text, str):
        return "not a string"
    try:
        u = urllib.parse.urlsplit(text)
        u.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as e:
        return f"{text!r} is not a URL ({e})"
    if u.scheme not in ("http", "https"):
        return f"{text!r} is not an http:// or https:// URL"
    if not u.hostname:
        return f"{text!r} has no host"
    if any(c.isspace() or ord(c) < 32 for c in text):
        return f"{text!r} holds white space or control characters"
    return ""


def url_secret_problem(text: object) -> str:
    """Why ``text`` holds a credential (``user:password@``, or any ``user@`` of an http(s) URL, where a
    token is often given as the user name), or "".  These URLs are shown to everyone who may read builds
    (README "Settings"), so a secret in one is a secret published; the message never repeats it."""
    if not isinstance(text, str):
        return ""
    try:
        u = urllib.parse.urlsplit(text)
        user, password = u.username, u.password
    except ValueError:
        return ""
    if password is None and not (user is not None and u.scheme.lower() in ("http", "https")):
        return ""
    shown = urllib.parse.urlunsplit(u._replace(netloc="***@" + u.netloc.rsplit("@", 1)[1]))
    return (f"{shown!r} holds a credential in its user part; the URL is shown to everyone who may read "
            "builds (build pages, the REST API, published files, mails): remove it and give the credential "
            "to git another way (a credential helper or ~/.netrc of the user the master and workers run as, "
            "or an ssh key)")


def _commit_url_template(v):
    """``web_url``: an http(s) URL once its ``{sha}`` is filled in (see buildbot_kernel/commitlink.py)."""
    return "{sha}" in v and not http_url_problem(v.replace("{sha}", "0" * 40))


def _str_list(v, allow_empty=True):
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v) and (allow_empty or v)


def _ip_address(v, allow_empty=False):
    return (allow_empty and v == "") or is_ip_address(v)


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


_BIND_EXPECT = "an IP address to listen on, such as \"127.0.0.1\" or \"0.0.0.0\" (every interface)"


SECTIONS: dict[str, dict[str, Key]] = {
    "server": {
        "title": Key((str,), "buildbot-kernel", "a string (the web UI's title)"),
        "web_port": Key((int,), 8010, "a TCP port number 1-65535", lambda v: 1 <= v <= 65535),
        "worker_port": Key((int,), 9989, "a TCP port number 1-65535", lambda v: 1 <= v <= 65535),
        "image_port": Key((int,), 8011, "a TCP port number 0-65535 (0 = off)", _port),
        "url": Key((str,), "", "the public URL of the web UI, e.g. \"http://buildbot.example.org:8010/\""),
        "db_url": Key((str,), "sqlite:///state.sqlite", "an SQLAlchemy database URL"),
        "bind": Key((str,), "127.0.0.1", _BIND_EXPECT),
        # --- per-listener addresses: "" = [server].bind ---
        "web_bind": Key((str,), "", _BIND_EXPECT + " for the web UI (default: bind)",
                        lambda v: _ip_address(v, allow_empty=True)),
        "worker_bind": Key((str,), "", _BIND_EXPECT + " for the worker (PB) port (default: bind)",
                           lambda v: _ip_address(v, allow_empty=True)),
        "image_bind": Key((str,), "", _BIND_EXPECT + " for the image server (default: bind)",
                          lambda v: _ip_address(v, allow_empty=True)),
        "web_per_address": Key((int,), 64, "open web UI connections one client address may hold, 1-256, or 0 "
                               "for no such cap (behind a reverse proxy every browser has the proxy's address; "
                               "the cap of 256 in all still holds)", lambda v: 0 <= v <= 256),
        # --- several masters: README.md "Growing past one machine" ---
        "mq_router": Key((str,), "", "the ws:// URL of the crossbar router the masters share (\"\" = one master)"),
        "state_dir": Key((str,), "state", "a directory path for the ledger, bisect records and machine registry "
                         "(relative to the master directory)", bool),
        "master_timeout": Key((int,), 60, "seconds from 15 to 604800 a master may stay silent before another "
                              "takes its work", lambda v: 15 <= v <= MAX_SECONDS),
        "test_farm": Key((bool,), True, "true or false (false: this master knows the [[machine]]s, for the forms "
                         "and [[test]] testers, but leaves the test farm and machine work to another master)"),
    },
    "images": {
        "root": Key((str,), "images", "a directory path (relative to the master directory)"),
        "base_url": Key((str,), "", "an http(s) URL under which the image root is served"),
        "keep_per_branch": Key((int,), 0, "a whole number >= 0 (0 = keep all)", _non_negative),
        "max_bytes": Key((int,), 0, "a whole number of bytes >= 0 (0 = no budget)", _non_negative),
        "debounce": Key((int, float), 1.0, f"seconds from 0 to {MAX_DEBOUNCE}", lambda v: 0 <= v <= MAX_DEBOUNCE),
        "watch": Key((str,), "inotify", "one of inotify, poll (an NFS tree other hosts write to), off",
                     lambda v: v in ("inotify", "poll", "off")),
        "group": Key((str,), "", "a group name the tree's readers belong to (\"\" = world-readable)"),
    },
}

# --- sections that may be absent altogether: absent means "not configured" (Settings.<name> is None) ---
OPTIONAL_SECTIONS: dict[str, dict[str, Key]] = {
    "auth": {
        "htpasswd": Key((str,), REQUIRED, "the path of an htpasswd file with bcrypt hashes (`htpasswd -B`), "
                        "relative to the settings file", bool),
        "admins": Key((list,), [], "a list of user names (everything, including free-form bisect commands)",
                      _str_list),
        "maintainers": Key((list,), [], "a list of user names (force branch builds, bisect with a named "
                           "[[test]])", _str_list),
        "anonymous": Key((str,), "read", f"one of {list(ANONYMOUS_ACCESS)}", lambda v: v in ANONYMOUS_ACCESS),
    },
    # --- mail notifications: README.md "Notifications" ---
    "notify": {
        "smtp": Key((str,), "localhost:25", "the mail server as host:port, e.g. \"localhost:25\"", bool),
        "user": Key((str,), "", "a user name to log in to the mail server with (needs password_file)"),
        "password_file": Key((str,), "", "the path of a file holding the mail server password, relative to the "
                             "settings file"),
        "starttls": Key((bool,), False, "true or false (require STARTTLS)"),
        "from": Key((str,), REQUIRED, "the sender's mail address, e.g. \"buildbot-kernel@example.org\"", bool),
        "to": Key((list,), REQUIRED, "a non-empty list of mail addresses", lambda v: _str_list(v, allow_empty=False)),
        "events": Key((list,), list(NOTIFY_EVENTS), f"a list drawn from {list(NOTIFY_EVENTS)}",
                      lambda v: _str_list(v) and set(v) <= set(NOTIFY_EVENTS)),
        "cc_culprit": Key((bool,), False, "true or false (cc a culprit commit's author and committer)"),
    },
}

TABLES: dict[str, dict[str, Key]] = {
    "repository": {
        "name": Key((str,), REQUIRED, "a non-empty name", bool),
        "url": Key((str,), REQUIRED, "a git URL or path", bool),
        "branches": Key((list,), REQUIRED, "a non-empty list of branch names",
                        lambda v: _str_list(v, allow_empty=False)),
        "poll_interval": Key((int,), 300, "a whole number of seconds from 1 to 604800", _duration),
        "build": Key((str,), REQUIRED, "the name of a [[build]] table", bool),
        "web_url": Key((str,), "", "an http(s) commit URL template holding {sha}, e.g. "
                       "\"https://gitlab.example.org/linux/-/commit/{sha}\" (empty: no commit links)",
                       lambda v: v == "" or _commit_url_template(v)),
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
        "ccache": Key((bool,), True, "true or false (compile through ccache when the worker has it)"),
        "jobs": Key((int,), 0, "a whole number >= 0 (0 = the worker's cpus)", _non_negative),
        "timeout": Key((int,), 7200, "seconds from 1 to 604800 without output before a build step is killed",
                       _duration),
    },
    "worker": {
        "name": Key((str,), REQUIRED, "a non-empty name", bool),
        "password": Key((str,), REQUIRED, "a non-empty password", bool, secret=True),
        "max_builds": Key((int,), 1, "a whole number > 0", _positive),
    },
    "machine": {
        "name": Key((str,), REQUIRED, "a name of letters, digits, '.', '_' and '-' (up to 64, starting with a "
                    "letter or digit): it goes on kernel command lines and into URLs", keys.plain_name),
        "class": Key((str,), "", "a hardware class name shared by identical machines, spelled as a machine name "
                     "(default: the machine's own name); a bisect uses machines of one class",
                     lambda v: v == "" or keys.plain_name(v)),
        "type": Key((str,), "remote", f"one of {list(MACHINE_TYPES)}", lambda v: v in MACHINE_TYPES),
        "soft_reboot": Key((str,), "", "a shell command that reboots the machine"),
        "power_cycle": Key((str,), "", "a shell command that power-cycles the machine"),
        "boot_timeout": Key((int,), 300, "seconds from 1 to 604800", _duration),
        "retries": Key((int,), 2, "a whole number >= 0", _non_negative),
        "install_modules": Key((bool,), False, "true or false (stage 1 unpacks the image's modules onto the "
                                "machine's root, bbk.root, before booting it)"),
        "cmdline": Key((str,), "", "extra kernel command line for the candidate kernel, on one line: no "
                       "newline, tab or other control character (it is sent as one line of the boot instructions)",
                       lambda v: not instructions.control_problem(v)),
        "memory": Key((int,), 1024, "MiB of guest memory (qemu machines)", _positive),
        "accel": Key((str,), "auto", "one of auto, kvm, tcg", lambda v: v in ("auto", "kvm", "tcg")),
        "stage1_kernel": Key((str,), "", "a path to the stage-1 kernel (qemu machines)"),
        "stage1_initrd": Key((str,), "", "a path to the stage-1 ramfs (qemu machines)"),
        "disk": Key((str,), "", "a path to the machine's local root disk image (qemu machines)"),
        "test_timeout": Key((int,), 600, "seconds from 1 to 604800 the test command may run before the "
                            "machine is power-cycled", _duration),
        "poll": Key((int,), 5, "seconds from 1 to 604800 between a waiting machine's requests for "
                    "instructions", _duration),
        "server_url": Key((str,), "", "the server's URL as the machine reaches it (default: images.base_url; "
                          "qemu: http://10.0.2.2:<image_port>)"),
        "initrd": Key((str,), "", "a path to an initrd given to every candidate (the local OS of a diskless "
                      "machine; qemu default: stage1_initrd)"),
        "nic": Key((str,), "virtio", "the QEMU network device: virtio or e1000 (qemu machines)",
                   lambda v: v in ("virtio", "e1000")),
        "key_file": Key((str,), "", "a path to the machine's secret key file, relative to the settings file "
                        "(qemu default: generated under the master's state directory)"),
        "default_kernel": Key((str,), "", "the image (name, or image directory URL) the machine boots when no "
                              "bisect or test holds it (\"\" = stay in stage 1)"),
        # --- type = "pdudaemon" (docs/machine-types.md) ---
        "pdu_daemon": Key((str,), "", "the URL of a pdudaemon HTTP listener, e.g. \"http://127.0.0.1:16421\""),
        "pdu_hostname": Key((str,), "", "the PDU's name in pdudaemon's configuration"),
        "pdu_port": Key((str, int), "", "the PDU outlet (port) the machine is plugged into"),
        "pdu_delay": Key((int,), 5, "seconds from 0 to 604800 between the PDU's off and on", _delay),
    },
    # --- named tests: what maintainers may run ---
    "test": {
        "name": Key((str,), REQUIRED, "a non-empty name", bool),
        "command": Key((str,), REQUIRED, "a non-empty shell command (exit 0 good, 125 skip, 1-127 bad)",
                       lambda v: bool(v.strip())),
        "mode": Key((str,), "test", f"one of {list(TEST_MODES)}", lambda v: v in TEST_MODES),
        "timeout": Key((int,), DEFAULT_TEST_TIMEOUT, "seconds from 1 to 604800 before the test is killed", _duration),
        # --- regression watch (README.md "Regression watch") ---
        "branches": Key((list,), [], "a list of watched branch names whose every new image is tested "
                        "([] = on demand only)", _str_list),
        "testers": Key((list,), [], "a list of [[machine]] names, machine class names or \"local\" (any free "
                       "one runs the test)",
                       _str_list),
    },
}


# --- typed settings: one frozen dataclass per section and table, generated from the schema above ---
def field_name(key: str) -> str:
    """The attribute a settings key is read through: the key itself, or the key with a trailing ``_`` when
    it is a Python keyword (``[notify] from`` is ``notify.from_``, a ``class`` key would be ``.class_``)."""
    return key + "_" if keyword.iskeyword(key) else key


def _annotation(spec: Key):
    """The field type of a key: TOML lists become tuples, so a frozen record is immutable all the way down."""
    return functools.reduce(operator.or_, (tuple[str, ...] if t is list else t for t in spec.types))


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


def _record_post_init(self) -> None:
    # a record built in code (tests, tools) from lists is as immutable as one parse() built
    for f in dataclasses.fields(self):
        value = getattr(self, f.name)
        if isinstance(value, list):
            object.__setattr__(self, f.name, tuple(value))


def _record_to_json(self) -> dict:
    """The record as TOML has it (schema key names, lists): for JSON documents and Buildbot properties."""
    return {key: list(v) if isinstance(v, tuple) else v
            for key, v in ((key, getattr(self, field_name(key))) for key in self.SCHEMA)}


def _record_from_toml(cls, table: dict):
    """The record of one validated table (schema key names, every default filled in)."""
    return cls(**{field_name(k): _frozen(v) for k, v in table.items()})


def record_class(class_name: str, label: str, schema: dict[str, Key]) -> type:
    """A frozen, keyword-only dataclass with one field per schema key, its default the schema's default
    (no default for a ``REQUIRED`` key): adding a key to the schema adds the field."""
    fields = [(field_name(key), _annotation(spec),
               dataclasses.field(default=dataclasses.MISSING if spec.default is REQUIRED else _frozen(spec.default),
                                 repr=not spec.secret))
              for key, spec in schema.items()]
    namespace = {
        "__module__": __name__,  # pickle and repr find the class here
        "__doc__": f"The validated {label} settings (docs/settings.md); attribute access only.",
        "__test__": False,  # pytest: ``Test`` is not a test class
        "SCHEMA": schema, "LABEL": label,
        "__post_init__": _record_post_init, "to_json": _record_to_json,
        "from_toml": classmethod(_record_from_toml),
    }
    return dataclasses.make_dataclass(class_name, fields, frozen=True, kw_only=True, namespace=namespace)


ServerSettings = record_class("ServerSettings", "[server]", SECTIONS["server"])
ImageSettings = record_class("ImageSettings", "[images]", SECTIONS["images"])
Auth = record_class("Auth", "[auth]", OPTIONAL_SECTIONS["auth"])
Notify = record_class("Notify", "[notify]", OPTIONAL_SECTIONS["notify"])
Repository = record_class("Repository", "[[repository]]", TABLES["repository"])
Build = record_class("Build", "[[build]]", TABLES["build"])
Worker = record_class("Worker", "[[worker]]", TABLES["worker"])
Machine = record_class("Machine", "[[machine]]", TABLES["machine"])
Test = record_class("Test", "[[test]]", TABLES["test"])
# section or table name -> its record class (a new section or table adds a line here and a Settings field)
RECORDS: dict[str, type] = {"server": ServerSettings, "images": ImageSettings, "auth": Auth, "notify": Notify,
                            "repository": Repository, "build": Build, "worker": Worker, "machine": Machine,
                            "test": Test}


def default(section: str, key: str):
    """The schema's default of one key (``default("machine", "poll")``), for code that must answer for a
    record it was not given; every other reader takes the value from its record."""
    schema = {**SECTIONS, **OPTIONAL_SECTIONS, **TABLES}[section][key]
    if schema.default is REQUIRED:
        raise KeyError(f"{section}.{key} has no default: it is required")
    return _frozen(schema.default)


def _named(records, name: str):
    for r in records:
        if r.name == name:
            return r
    raise KeyError(name)


@dataclass(frozen=True)
class Settings:
    """Validated settings: each section a record, each table a tuple of records, every default filled in."""

    path: str
    server: ServerSettings
    images: ImageSettings
    repositories: tuple[Repository, ...] = ()
    builds: tuple[Build, ...] = ()
    workers: tuple[Worker, ...] = ()
    machines: tuple[Machine, ...] = ()
    tests: tuple[Test, ...] = ()
    auth: Auth | None = None  # None: no [auth] section (only loopback listeners, everyone is admin)
    notify: Notify | None = None  # None: no [notify] section (no mail)
    master_dir: str | None = None  # the master's directory when the master loaded them (see tree_root)

    def listener(self, name: str) -> str:
        """The address of one listener (``web_bind``, ``worker_bind``, ``image_bind``)."""
        return getattr(self.server, name) or self.server.bind

    def test(self, name: str) -> Test:
        return _named(self.tests, name)

    def build(self, name: str) -> Build:
        return _named(self.builds, name)

    def repository(self, name: str) -> Repository:
        return _named(self.repositories, name)

    def machine(self, name: str) -> Machine:
        return _named(self.machines, name)

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


def parse(text: str, path: str = "settings.toml", master_dir: str | os.PathLike | None = None) -> Settings:
    """Validate settings text; ``path`` is used in messages and to resolve relative fragment paths.
    ``master_dir``: the master's directory, which ``[images].root`` and ``[server].state_dir`` are
    relative to (the master passes it; without it, as for the CLI, the settings file's directory)."""
    problems: list[str] = []
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(path, [f"not valid TOML: {e}"]) from None
    except RecursionError:
        raise SettingsError(path, ["not usable TOML: arrays or tables nested too deeply for the parser; "
                                   "settings need at most two levels ([section] and [[table]] lists)"]) from None

    for key in raw:
        if key not in SECTIONS and key not in OPTIONAL_SECTIONS and key not in TABLES:
            problems.append(
                f"unknown section '{key}' (allowed: [{'], ['.join([*SECTIONS, *OPTIONAL_SECTIONS])}], "
                f"[[{']], [['.join(TABLES)}]])"
            )
    sections = {name: _check_table(f"[{name}]", raw.get(name, {}), schema, problems)
                for name, schema in SECTIONS.items()}
    optional = {name: _check_table(f"[{name}]", raw[name], schema, problems)
                for name, schema in OPTIONAL_SECTIONS.items() if name in raw}
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
    master = Path(master_dir).resolve() if master_dir is not None else base
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
        # a format reads the typed build, so it checks a build whose own keys are all valid
        typed = Build.from_toml(b) if b.keys() == TABLES["build"].keys() else None
        for fmt in typed.packages if typed else ():
            problem = formats.settings_problem(fmt, typed)
            if problem:
                problems.append(f"[[build]] ({b.get('name')!r}).{problem}")
        files = list(b.get("fragments", []))
        if "config" in b and is_config_file(b["config"]):
            files.append(b["config"])
        for f in files:
            p = (base / f) if not os.path.isabs(f) else Path(f)
            if not os.access(p, os.R_OK) or not p.is_file():
                key = "config" if f == b.get("config") and f not in b.get("fragments", []) else "fragments"
                problems.append(f"[[build]] ({b.get('name')!r}).{key}: config file {f!r} is not a readable file "
                                f"(looked at {p}); give a path relative to the settings file's directory, "
                                "or an absolute one")
    machine_keys: dict[str, str] = {}
    for m in tables["machine"]:
        mtype = machinetypes.get(m["type"]) if m.get("type") in MACHINE_TYPES else None
        problems += [f"[[machine]] ({m.get('name')!r}).{p}" for p in (mtype.problems(m) if mtype else [])]
        if mtype is not None and not mtype.generated_key and not m.get("key_file"):
            example = "keys/" + keys.key_file_name(str(m.get("name")))
            problems.append(f"[[machine]] ({m.get('name')!r}).key_file: a {m['type']} machine needs a key file (every "
                            f"/machines/ request carries it); {keys.how_to_make(example)}, then set "
                            f"key_file = \"{example}\"")
        elif m.get("key_file"):
            try:
                machine_keys[str(m.get("name"))] = keys.read_key(base / m["key_file"])
            except keys.KeyFileError as e:
                problems.append(f"[[machine]] ({m.get('name')!r}).key_file: {e}")
    problems += [f"[[machine]] ({second!r}).key_file: {keys.shared_key_problem(first, second)}"
                 for first, second in keys.shared_keys(machine_keys)]
    if tables["machine"] and sections["server"].get("image_port") == 0:
        problems.append("[server].image_port: test machines ([[machine]]) fetch boot instructions from the "
                        "embedded server's /machines/; set image_port to a port, not 0")
    ports = [(k, sections["server"].get(k)) for k in ("web_port", "worker_port", "image_port")]
    used = [p for _, p in ports if p]
    if len(set(used)) != len(used):
        problems.append(f"[server]: web_port, worker_port and image_port must differ, got {dict(ports)}")
    problems += _value_problems(sections, tables, base, master)
    problems += _class_problems(tables["machine"])
    problems += _watch_problems(tables)
    group_problem = modes.group_problem(sections["images"].get("group", ""))
    if group_problem:
        problems.append(f"[images].group: {group_problem}")
    if sections["images"].get("base_url") == "":
        sections["images"]["base_url"] = f"http://localhost:{sections['server'].get('image_port') or 80}"

    problems += _access_problems(sections["server"], optional.get("auth"), tables["worker"], base)
    problems += _notify_problems(optional.get("notify"), base)
    problems += _served_secret_problems(sections, optional, tables, base, master, master_dir is not None)
    if problems:
        raise SettingsError(path, problems)
    typed = {name: RECORDS[name].from_toml(table) for name, table in {**sections, **optional}.items()}
    rows = {name: tuple(RECORDS[name].from_toml(t) for t in items) for name, items in tables.items()}
    return Settings(path=path, master_dir=None if master_dir is None else os.path.abspath(master_dir),
                    server=typed["server"], images=typed["images"],
                    repositories=rows["repository"], builds=rows["build"], workers=rows["worker"],
                    machines=rows["machine"], tests=rows["test"], auth=typed.get("auth"), notify=typed.get("notify"))


# --- accounts, roles, listeners: checks across keys ---
def _access_problems(server: dict, auth: dict | None, workers: list, base: Path) -> list[str]:
    """Who can reach what: a listener off loopback needs accounts (web) or real passwords (workers)."""
    problems: list[str] = []

    def address(key):
        """The listener's address, or None when it is not an IP address (reported on its own)."""
        v = server.get(key)
        v = server.get("bind") if v == "" else v
        return v if isinstance(v, str) and _ip_address(v) else None

    web, worker = address("web_bind"), address("worker_bind")
    if web is not None and not is_loopback(web) and auth is None:
        problems.append(f"[server]: the web UI listens on {web} (not loopback) but there is no [auth] section: "
                        "anyone on the network could force builds and run bisect commands; add [auth] "
                        "(htpasswd, admins, maintainers) or set web_bind = \"127.0.0.1\"")
    if worker is not None and not is_loopback(worker):
        for w in workers:
            if w.get("password") in SHIPPED_WORKER_PASSWORDS:
                problems.append(f"[[worker]] ({w.get('name')!r}).password: the worker port listens on {worker} "
                                f"(not loopback) and {w['password']!r} is a published example password; "
                                "choose a secret one (and give it to that worker's create-worker)")
    if auth is None:
        return problems
    path = auth.get("htpasswd")
    if path:
        p = Path(path) if os.path.isabs(path) else base / path
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            problems.append(f"[auth].htpasswd: cannot read {p}: {why}; create it with `htpasswd -B -c {p} <user>`")
        else:
            _, bad = htpasswd.parse(text)
            problems += [f"[auth].htpasswd ({p}): {b}" for b in bad]
    return problems


def _notify_problems(notify: dict | None, base: Path) -> list[str]:
    """Addresses, the mail server and its password file: each wrong one named with what to write."""
    if not notify:
        return []
    problems = []
    if "smtp" in notify:
        try:
            split_hostport(notify["smtp"])
        except ValueError as e:
            problems.append(f"[notify].smtp: {e}; write the mail server as host:port, e.g. \"localhost:25\" or "
                            "\"[::1]:587\"")
    if "from" in notify and address_problem(notify["from"]):
        problems.append(f"[notify].from: {address_problem(notify['from'])}")
    for a in notify.get("to", []):
        if address_problem(a):
            problems.append(f"[notify].to: {address_problem(a)}")
    user, pw = notify.get("user"), notify.get("password_file")
    if user and not pw:
        problems.append(f"[notify].password_file: missing; user = {user!r} needs a password: write it in a file "
                        "readable by the master only and name it here (relative to the settings file)")
    if pw and not user:
        problems.append("[notify].user: missing; password_file is only used to log in, so name the user too")
    if pw:
        p = Path(pw) if os.path.isabs(pw) else base / pw
        try:
            p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            problems.append(f"[notify].password_file: cannot read {p}: {why}; create it (chmod 600) or fix the "
                            "path (relative to the settings file)")
    return problems


def _served_secret_problems(sections: dict, optional: dict, tables: dict, base: Path, master: Path,
                            known_master: bool) -> list[str]:
    """The image server hands the tree to anyone on the lab network and reads what the master can read,
    0600 files included: the state directory (live step tokens, generated machine keys, bisect requests),
    the master's mail outbox (a mail file put there is sent), key files and password files must lie
    outside it.  ``[images].root`` and ``state_dir`` are relative to the master's directory, the
    others to the settings file's."""
    def real(value: str, relative_to: Path = base) -> Path:
        return (Path(value) if os.path.isabs(value) else relative_to / value).resolve()

    images, server = sections["images"], sections["server"]
    root = images.get("root", default("images", "root"))
    if not isinstance(root, str) or not root.strip():
        return []  # reported by _root_problems
    tree = real(root, master)
    state_dir = server.get("state_dir", default("server", "state_dir"))
    named = [("[server].state_dir", state_dir, real(state_dir, master) if isinstance(state_dir, str) else None)]
    if known_master:
        named.append(("the master's mail outbox", OUTBOX, real(OUTBOX, master)))
    for where, value in [*((f"[[machine]] ({m.get('name')!r}).key_file", m.get("key_file")) for m in tables["machine"]),
                         ("[auth].htpasswd", (optional.get("auth") or {}).get("htpasswd")),
                         ("[notify].password_file", (optional.get("notify") or {}).get("password_file"))]:
        named.append((where, value, real(value) if isinstance(value, str) and value else None))
    problems = []
    for where, value, path in named:
        if value and path is not None and (path == tree or tree in path.parents):
            problems.append(f"{where}: {value!r} lies inside the image tree ({tree}), which the image server "
                            "hands to anyone who asks for it; keep it outside [images].root (e.g. beside the "
                            "settings file)")
    return problems


def _multi_master_problems(server: dict) -> list[str]:
    """Several masters (``mq_router`` set) share one database and one state directory; a master on its own
    SQLite file or its own ``state`` would build, publish and bisect beside the other as if it were alone.
    ``test_farm = false`` leaves machine work to another master: alone, there is none."""
    router = server.get("mq_router", "")
    if not router:
        if server.get("test_farm", True) is False:
            return ["[server].test_farm: false leaves the test farm to another master, but mq_router is not set "
                    "(one master): machine tests would fail; remove test_farm or set mq_router"]
        return []
    problems = []
    url = urllib.parse.urlsplit(router)
    if url.scheme not in ("ws", "wss") or not url.hostname:
        problems.append(f"[server].mq_router: {router!r} is not a ws:// or wss:// URL; write the crossbar "
                        "router's WebSocket URL, e.g. \"ws://10.0.0.5:8090/ws\" (\"\" for one master)")
    if server.get("db_url", "sqlite:").startswith("sqlite:"):
        problems.append("[server].db_url: several masters (mq_router is set) need one shared database; write "
                        "a PostgreSQL URL, e.g. \"postgresql+psycopg://buildbot:PASSWORD@db.lab.example/buildbot\"")
    if not os.path.isabs(server.get("state_dir", "state")):
        problems.append("[server].state_dir: several masters (mq_router is set) share the ledger, bisect records "
                        "and machine registry; write the absolute path of a directory on the shared filesystem "
                        "(NFS) every master mounts, e.g. \"/srv/bbk-shared/state\"")
    return problems


def _value_problems(sections: dict, tables: dict, base: Path, master: Path) -> list[str]:
    """Checks of values that came through the schema with the right type but cannot work: addresses,
    URLs, paths and branch names.  Each message names the key and says what to write instead."""
    problems = []
    server, images = sections["server"], sections["images"]
    if "bind" in server and not is_ip_address(server["bind"]):
        problems.append(f"[server].bind: {server['bind']!r} is not an IP address; write a literal address "
                        "such as \"127.0.0.1\" (this host only) or \"0.0.0.0\" (every interface), not a host name")
    if "db_url" in server:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(server["db_url"])
        except (ArgumentError, ValueError) as e:
            problems.append(f"[server].db_url: {server['db_url']!r} is not an SQLAlchemy database URL ({e}); "
                            "write e.g. \"sqlite:///state.sqlite\" or \"postgresql://user@host/buildbot\"")
    problems += _multi_master_problems(server)
    if images.get("base_url"):
        problem = http_url_problem(images["base_url"])
        if problem:
            problems.append(f"[images].base_url: {problem}; write the http(s) URL the image tree is served at, "
                            "e.g. \"http://kernels.example.org:8011\"")
    for m in tables["machine"]:
        if m.get("server_url"):
            problem = http_url_problem(m["server_url"])
            if problem:
                problems.append(f"[[machine]] ({m.get('name')!r}).server_url: {problem}; write the http(s) URL "
                                "the machine reaches the image server at, e.g. \"http://10.0.0.1:8011\"")
    if "root" in images:
        problems += _root_problems(images["root"], base, master)
    problems += _branch_problems(tables["repository"])
    problems += _url_secret_problems(sections, tables)
    return problems


def _url_secret_problems(sections: dict, tables: dict) -> list[str]:
    """Every URL the master shows or publishes: none may carry a credential (:func:`url_secret_problem`)."""
    named = [("[server].url", sections["server"].get("url")), ("[images].base_url", sections["images"].get("base_url"))]
    named += [(f"[[repository]] ({r.get('name')!r}).url", r.get("url")) for r in tables["repository"]]
    named += [(f"[[repository]] ({r.get('name')!r}).web_url", r.get("web_url")) for r in tables["repository"]]
    named += [(f"[[machine]] ({m.get('name')!r}).{key}", m.get(key)) for m in tables["machine"]
              for key in ("server_url", "pdu_daemon")]
    problems = []
    for where, url in named:
        problem = url_secret_problem(url)
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def machine_class(machine) -> str:
    """A ``[[machine]]``'s hardware class: its ``class`` key, else its own name.  The only reader of the
    key (``class`` is a Python keyword: a typed settings object may spell the field differently)."""
    if isinstance(machine, dict):
        return machine.get("class") or machine.get("name") or ""
    return getattr(machine, "class_", "") or machine.name


def tester_machines(machines: list, name: str) -> list[str]:
    """The machines a tester name stands for, in settings order: the machine of that name, else every
    machine of that class; [] when it is neither (the caller names the field)."""
    names = [m["name"] if isinstance(m, dict) else m.name for m in machines]
    if name in names:
        return [name]
    return [n for n, m in zip(names, machines, strict=True) if machine_class(m) == name]


def tester_names(machines: list) -> dict[str, list[str]]:
    """Every tester name a bisect or a test may give (machines and classes) -> its machines."""
    names = [m["name"] if isinstance(m, dict) else m.name for m in machines]
    return {n: tester_machines(machines, n) for n in dict.fromkeys(names + [machine_class(m) for m in machines])}


def _class_problems(machines: list[dict]) -> list[str]:
    """A class named like another machine would make a tester name mean two things."""
    names = {m.get("name") for m in machines}
    problems = []
    for m in machines:
        cls = machine_class(m)
        if LOCAL_TESTER in (m.get("name"), m.get("class")):
            key = "name" if m.get("name") == LOCAL_TESTER else "class"
            problems.append(f"[[machine]] ({m.get('name')!r}).{key}: {LOCAL_TESTER!r} is the tester name of the "
                            "build workers (a bisect or [[test]] with tester \"local\" runs its command there); "
                            "name the machine or class after the hardware, e.g. \"skl-1\"")
        elif cls != m.get("name") and cls in names:
            problems.append(f"[[machine]] ({m.get('name')!r}).class: {cls!r} is the name of another [[machine]]; "
                            "a tester name must mean one thing: rename the class (e.g. after the hardware, "
                            "\"skl\")")
    return problems


def _watch_problems(tables: dict) -> list[str]:
    """A watched test names branches the master builds and testers that exist; names become file names
    of the results (``<image>/tests/<name>.json``), so they must be plain."""
    problems = []
    branches = {b for r in tables["repository"] for b in (r.get("branches") or [])}
    machines = {m.get("name") for m in tables["machine"]} | {machine_class(m) for m in tables["machine"]}
    for t in tables["test"]:
        where = f"[[test]] ({t.get('name')!r})"
        name = t.get("name")
        if isinstance(name, str) and name and (identifier(name) != name or name.startswith(("-", "."))):
            problems.append(f"{where}.name: {name!r} holds characters other than letters, digits, '_' and '-' "
                            "(it names the result files in the image tree); rename it, e.g. "
                            f"{identifier(name).lstrip('-_.') or 'boot'!r}")
        for b in t.get("branches", []):
            if b not in branches:
                problems.append(f"{where}.branches: {b!r} is not a branch of any [[repository]] "
                                f"(watched: {sorted(branches) or 'none'})")
        for tester in t.get("testers", []):
            if tester != LOCAL_TESTER and tester not in machines:
                problems.append(f"{where}.testers: {tester!r} is neither \"local\" nor a configured [[machine]] "
                                f"or machine class (configured: {sorted(n for n in machines if n) or 'none'})")
        if t.get("branches") and not t.get("testers"):
            problems.append(f"{where}.testers: the test watches {t['branches']} but names no tester; "
                            "add testers = [\"local\"] or [[machine]] names")
    return problems


def _root_problems(root: str, base: Path, master: Path) -> list[str]:
    """The tree is served to everyone: it must be a directory of its own, neither the master's directory
    (which it is relative to) nor the settings file's, nor above either."""
    p = Path(root) if os.path.isabs(root) else master / root
    above = {base.resolve(), *base.resolve().parents, master, *master.parents}
    if not root.strip() or p.resolve() in above:
        return [f"[images].root: {root!r} is the master's directory or the settings file's, or above one of "
                "them, which would serve the master's own files (settings, passwords, database, state); name "
                "a directory of its own, e.g. \"images\""]
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "" if probe == p else f" ({probe} is a file)"
        return [f"[images].root: {str(p)!r} is not a directory{where}; the image tree is a directory: "
                "point images.root at one (it is created when missing) or move the file away"]
    return []


def _branch_problems(repositories: list[dict]) -> list[str]:
    """Branch names become directories (``safe_branch``) and Buildbot names (``identifier``): each must be
    a name git accepts, and two different branches must not end up in the same directory or builder."""
    problems = []
    seen: dict[tuple[str, str], str] = {}
    for r in repositories:
        for b in r.get("branches") or []:
            problem = branch_problem(b)
            if problem:
                problems.append(f"[[repository]] ({r.get('name')!r}).branches: {problem}; write the branch "
                                "name exactly as `git branch -r` shows it, without the remote")
                continue
            if len(b) > MAX_BRANCH_CHARS:
                problems.append(f"[[repository]] ({r.get('name')!r}).branches: {b[:40]!r}... is {len(b)} characters "
                                f"long; a watched branch may have at most {MAX_BRANCH_CHARS}: it is part of every "
                                f"image name (<kernel release>-<branch>_<sha6>_<yyyymmdd>_+, at most "
                                f"{MAX_COMPONENT} characters with {NAME_OVERHEAD} of them fixed), and the rest "
                                "is left for the kernel release; watch a branch with a shorter name (push it "
                                "under one)")
                continue
            for kind, mapped in (("image directory", safe_branch(b)),
                                 ("Buildbot name", identifier(f"changes-{b}"))):
                other = seen.setdefault((kind, mapped), b)
                if other != b:
                    problems.append(f"[[repository]] ({r.get('name')!r}).branches: {other!r} and {b!r} both "
                                    f"become the {kind} {mapped!r}; watch only one of them, or build the other "
                                    "from a repository of its own with a distinct branch name")
    return problems


def load(path: str | os.PathLike, master_dir: str | os.PathLike | None = None) -> Settings:
    """The settings file, checked (``master_dir``: see :func:`parse`)."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SettingsError(path, [f"cannot read the settings file: {e.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SettingsError(path, [f"not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} cannot be "
                                   "decoded; TOML files are UTF-8: save the file as UTF-8 "
                                   "(e.g. iconv -f latin1 -t utf-8)"]) from None
    return parse(text, path, master_dir)


def locate(config_dir: str | os.PathLike, environ=os.environ) -> str:
    """The contract: ``$BUILDBOT_KERNEL_SETTINGS``, else ``settings.toml`` beside master.cfg."""
    return environ.get(ENV_VAR) or os.path.join(str(config_dir), "settings.toml")


def tree_root(settings: Settings) -> Path:
    """``[images].root``: relative to the master's directory (settings the master loaded), else to the
    settings file's (the CLI, which knows no master: a settings file beside master.cfg gives the same)."""
    return _from_master(settings, settings.images.root).resolve()


def state_path(settings: Settings) -> Path:
    """``[server].state_dir``, relative as :func:`tree_root`; not resolved, as the master always named it
    (the paths under it, the change poller's clone among them, stay the same across an upgrade)."""
    return _from_master(settings, settings.server.state_dir)


def _from_master(settings: Settings, p: str) -> Path:
    return Path(p) if os.path.isabs(p) else Path(settings.master_dir or settings.base_dir) / p


def resolve(settings: Settings, p: str) -> Path:
    """A path from the settings file, relative to that file's directory."""
    return Path(p) if os.path.isabs(p) else settings.base_dir / p
