"""The reproducer of an image (docs/index-format.md "reproducer"): a shell script that rebuilds it from the
commit on a clean machine, and the same facts as a metadata field.

It is generated from the very functions that produce the worker's commands (kbuild_commands), so it
cannot drift from what the builder ran: the same configure script, the same make arguments and build
identity, LOCALVERSION unset.  Only ccache and the job count differ (neither changes the result).
Config files (a full base .config and the fragments) are embedded, because the master's paths mean
nothing on another machine.
"""

from __future__ import annotations

import base64
import hashlib
import shlex

from buildbot_kernel import kbuild_commands
from buildbot_kernel.settings import Build

FILE = "reproducer.sh"
_NPROC = '"$(nproc)"'


def _embed(dest: str, content: bytes) -> list[str]:
    """Shell lines writing ``content`` to ``dest`` byte for byte: a quoted here-document for text, base64
    for anything else (a delimiter never appears as a line of the text: it holds the text's own hash)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text or (text and not text.endswith("\n")):
        enc = base64.encodebytes(content).decode("ascii")
        return [f"base64 -d > {shlex.quote(dest)} <<'BBK_BASE64'", enc.rstrip("\n"), "BBK_BASE64"]
    delim = "BBK_EOF_" + hashlib.sha256(content).hexdigest()[:20]
    return [f"cat > {shlex.quote(dest)} <<'{delim}'", text.rstrip("\n"), delim] if text else \
        [f": > {shlex.quote(dest)}"]


def _quoted(cmd: list[str], jobs_token: str) -> str:
    return " ".join("-j" + _NPROC if a == jobs_token else shlex.quote(a) for a in cmd)


def facts(build: Build, *, url: str, sha: str, name: str, localversion: str, timestamp: str,
          full_config: bool) -> dict:
    """The metadata field: what a person needs to rebuild without reading the script."""
    return {
        "file": FILE,
        "git": {"url": url, "sha": sha},
        "config": build.config,
        "fragments": list(build.fragments),
        "config_localversion": localversion,
        "unset": ["LOCALVERSION"],
        "make_variables": {"ARCH": kbuild_commands.kernel_arch(build.arch),
                           **({"CROSS_COMPILE": build.cross_compile} if build.cross_compile else {}),
                           **kbuild_commands.build_identity(timestamp)},
        "make": [_quoted(kbuild_commands.compile_command(build, 1, False, timestamp), "-j1"),
                 shlex.join(kbuild_commands.kernelrelease_command(build))],
        "full_config": full_config,
        "kernelrelease": name,
    }


def script(build: Build, *, url: str, sha: str, name: str, branch: str, localversion: str, timestamp: str,
           base_config: bytes | None, fragments: list[bytes], compiler: str = "") -> str:
    """The script; ``base_config`` is the full .config when the build names a file, else None."""
    lines = [
        "#!/bin/sh",
        f"# Rebuilds the kernel image {name} (branch {branch}, build config {build.name})",
        f"# from commit {sha} on a clean machine. Run it in an empty directory.",
        "# Needs git, make, flex, bison, bc, libelf and libssl headers, xz, and the image's compiler:",
        f"#   {compiler or 'not recorded'}",
        f"# The last check compares `make kernelrelease` with the image name: {name}",
        "set -e",
        "# LOCALVERSION must stay unset (set, even empty, it drops the '+' of the name); ARCH and CROSS_COMPILE",
        "# are given on every make command line below",
        "unset LOCALVERSION ARCH CROSS_COMPILE KBUILD_OUTPUT",
        f"git clone --no-checkout {shlex.quote(url)} src",
        f"git -C src checkout --detach {shlex.quote(sha)}",
        "mkdir -p fragments",
    ]
    if base_config is not None:
        lines += _embed("fragments/base.config", base_config)
    for i, content in enumerate(fragments):
        lines += _embed(f"fragments/{i}.config", content)
    configure = kbuild_commands.configure_script(build, localversion, len(fragments), base_config is not None)
    lines += [line for line in configure.splitlines() if line != "set -e"]
    lines.append(_quoted(kbuild_commands.compile_command(build, 1, False, timestamp), "-j1"))
    lines += [
        f"got=$({shlex.join(kbuild_commands.kernelrelease_command(build))})",
        f"if [ \"$got\" != {shlex.quote(name)} ]; then",
        f"  echo \"make kernelrelease printed $got, expected\" {shlex.quote(name)} >&2",
        "  exit 1",
        "fi",
        "echo \"kernelrelease $got matches the image\"",
        "# the image's files, as the builder packaged them (into pkg/)",
    ]
    lines += [line for line in kbuild_commands.package_script(build, name).splitlines() if line != "set -e"]
    return "\n".join(lines) + "\n"
