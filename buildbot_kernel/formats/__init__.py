"""Package formats as data: one ``<name>.ini`` beside this module per format (docs/package-formats.md).

A format says what a worker runs after the build has been staged (``stage/boot``, ``stage/lib/modules``),
which files it leaves in the upload directory ``pkg/`` and which of them must be there.  Settings
validation, the package step and the image completeness rule read this registry, so adding a format is
one ``.ini`` file (plus, when its script needs computed values, a small module named by ``variables``)
and its tests, never a new branch in the build code.
"""

from __future__ import annotations

import configparser
import fnmatch
import importlib
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buildbot_kernel.settings import Build

from buildbot_kernel import descriptions
from buildbot_kernel.errors import BuildbotKernelError

HERE = Path(__file__).resolve().parent
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
_MODULE_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")


class FormatError(BuildbotKernelError, ValueError):
    """A format description is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class PackageFormat:
    name: str
    description: str
    script: str
    files: tuple[str, ...]                # names or glob patterns the script leaves in pkg/
    required: tuple[str, ...]             # of those, the ones an image built with this format must hold
    always: bool = False                  # built for every image whether or not settings name it
    tools: tuple[str, ...] = ()           # programs the worker needs
    variables: Callable[[str, Build, PackageFormat], dict[str, str]] | None = field(default=None, compare=False)
    data: Mapping[str, Mapping[str, str]] = field(default_factory=dict, compare=False)

    def owns(self, filename: str) -> bool:
        return any(fnmatch.fnmatchcase(filename, p) for p in self.files)

    def missing(self, filenames) -> list[str]:
        """Required patterns no file matches."""
        names = list(filenames)
        return [p for p in self.required if not any(fnmatch.fnmatchcase(n, p) for n in names)]

    def environment(self, name: str, build: Build) -> dict[str, str]:
        """The variables the script reads: ``BBK_NAME`` (the image name) and the format's own."""
        env = {"BBK_NAME": name}
        if self.variables is not None:
            env.update(self.variables(name, build, self))
        return env

    def shell(self, name: str, build: Build) -> str:
        """The script in a subshell with its variables exported (quoted: the values are never code)."""
        tools = " ".join(shlex.quote(t) for t in self.tools)
        lines = [f"# package format {self.name}: {self.description}", "("]
        lines += [f"  export {k}={shlex.quote(v)}" for k, v in sorted(self.environment(name, build).items())]
        if tools:
            lines.append(f"  for t in {tools}; do command -v \"$t\" >/dev/null 2>&1 || {{ echo \"package format "
                         f"{self.name}: the worker has no $t; install it (scripts/install-deps)\" >&2; exit 1; }}; "
                         "done")
        lines += ["  " + line for line in self.script.splitlines() if line.strip()]
        lines.append(")")
        return "\n".join(lines)


def _words(section, key: str) -> tuple[str, ...]:
    return tuple(section.get(key, "").split())


def load(path: Path) -> PackageFormat:
    """One description file -> PackageFormat; FormatError names the file and key on any problem."""
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise FormatError(f"{path.name}: cannot read: {e}") from None
    name = path.stem
    if not _NAME_RE.match(name):
        raise FormatError(f"{path.name}: a format name is lowercase letters, digits, '-' and '_'")
    if not cp.has_section("format"):
        raise FormatError(f"{path.name}: no [format] section")
    s = cp["format"]
    for key in ("description", "script", "files"):
        if not s.get(key, "").strip():
            raise FormatError(f"{path.name}: [format] {key} is missing or empty")
    files, required = _words(s, "files"), _words(s, "required")
    if not set(required) <= set(files):
        raise FormatError(f"{path.name}: [format] required lists {sorted(set(required) - set(files))} which "
                          "files does not")
    try:
        always = s.getboolean("always", fallback=False)
    except ValueError:
        raise FormatError(f"{path.name}: [format] always must be true or false") from None
    variables = None
    module = s.get("variables", "").strip()
    if module:
        if not _MODULE_RE.match(module):
            raise FormatError(f"{path.name}: [format] variables names a module of buildbot_kernel.formats")
        variables = importlib.import_module(f"{__name__}.{module}").variables
    data = {sec: dict(cp[sec]) for sec in cp.sections() if sec != "format"}
    return PackageFormat(name=name, description=s["description"].strip(), script=s["script"].strip("\n"),
                         files=files, required=required, always=always, tools=_words(s, "tools"),
                         variables=variables, data=data)


def registry(directory: Path = HERE) -> dict[str, PackageFormat]:
    """Every format of ``directory`` by name (two small files: read when asked, no cache to go stale)."""
    return descriptions.read_all(directory, load)


def names() -> tuple[str, ...]:
    return tuple(registry())


def get(name: str) -> PackageFormat:
    return descriptions.pick(registry(), name, FormatError, "package format")


def selected(packages) -> list[PackageFormat]:
    """The formats a build makes: the ``always`` ones first, then those the settings name, in order."""
    out = [f for f in registry().values() if f.always]
    for name in packages:
        fmt = get(name)
        if fmt not in out:
            out.append(fmt)
    return out


def always_required() -> tuple[str, ...]:
    """Files every image must hold, whichever formats built it (the image completeness rule)."""
    return tuple(p for f in registry().values() if f.always for p in f.required)


def settings_problem(name: str, build: Build) -> str:
    """Why ``build`` cannot make format ``name`` (e.g. an arch the format cannot name), or ""."""
    fmt = get(name)
    if fmt.variables is None:
        return ""
    try:
        fmt.environment("0.0.0-check+", build)
    except ValueError as e:
        return str(e)
    return ""
