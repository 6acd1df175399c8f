"""Reading Kbuild's output: progress for the UI and the first real error for the step summary.

A kernel build prints thousands of ``  CC      path.o`` lines and, when it fails, the compiler's
``file.c:L:C: error: ...`` is buried above several ``make[N]: *** ... Error 1`` lines.  Maintainers
want the compiler's line, so that is preferred over make's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# "  CC      init/main.o", "  CC [M]  drivers/gpu/drm/i915/i915_drv.o", "  AS      arch/x86/...o"
_OBJECT = re.compile(r"^\s{2}(CC|AS|CC \[M\]|AS \[M\]|HOSTCC|LD \[M\])\s+(\S+)")
_COMPILER_ERROR = re.compile(r"^\S+:\d+(:\d+)?: (fatal )?error: ")
# "ld: ... error" is looked for as the first "ld: " and an "error" after it, never as one ``ld: .*error``
# pattern: that one runs from every "ld: " of a line to its end and back (milliseconds for a 4 KiB line of
# "ld: e"), and the master reads the compile log on its reactor thread, where the web UI and workers wait
_LINKER_PREFIX = re.compile(r"ld(\.bfd)?: ")
MAX_KEPT_ERRORS = 20  # only the first error is shown; a build with millions keeps no more than this
_MAKE_ERROR = re.compile(r"^make(\[\d+\])?: \*\*\* ")
_KCONFIG_ERROR = re.compile(r"^\*\*\* ")
# absolute paths into the worker's checkout say nothing to a maintainer: show tree-relative ones
_WORKDIR_PREFIX = re.compile(r"(^|\s)\S*/work/src/")


def linker_error(line: str) -> bool:
    """``undefined reference to``, or ``ld: ``/``ld.bfd: `` with ``error`` somewhere after it (linear time)."""
    if "undefined reference to" in line:
        return True
    m = _LINKER_PREFIX.search(line)
    return m is not None and "error" in line[m.end():]


@dataclass
class KbuildProgress:
    """Feed lines; read ``objects``, ``last_object`` and ``first_error``."""

    objects: int = 0
    last_object: str = ""
    errors: list[str] = field(default_factory=list)
    _make_errors: list[str] = field(default_factory=list)

    def feed(self, line: str) -> bool:
        """Returns True when the line was an error line (callers mirror those into an errors log)."""
        m = _OBJECT.match(line)
        if m:
            self.objects += 1
            self.last_object = m.group(2)
            return False
        if _COMPILER_ERROR.match(line) or linker_error(line):
            if len(self.errors) < MAX_KEPT_ERRORS:
                self.errors.append(_WORKDIR_PREFIX.sub(r"\1", line.strip()))
            return True
        if _MAKE_ERROR.match(line) or _KCONFIG_ERROR.match(line):
            if len(self._make_errors) < MAX_KEPT_ERRORS:
                self._make_errors.append(line.strip())
            return True
        return False

    @property
    def first_error(self) -> str:
        if self.errors:
            return self.errors[0]
        meaningful = [e for e in self._make_errors if e.strip("* ")]
        return meaningful[0] if meaningful else ""

    def summary(self, running: bool) -> str:
        if running:
            tail = f" (last: {self.last_object})" if self.last_object else ""
            return f"compiling: {self.objects} objects{tail}"
        return f"compiled {self.objects} objects"
