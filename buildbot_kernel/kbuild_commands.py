"""The shell scripts a build runs on a worker, generated from a ``[[build]]`` (docs/settings.md).

Kept pure (strings in, strings out) so the exact commands are unit-tested and readable in one place.
Layout of a builder's work directory on the worker (persistent between builds, so the second build of
a branch is incremental):

    work/src        the git checkout (Buildbot's Git step, incremental)
    work/obj        the out-of-tree build directory (make O=...)
    work/fragments  base .config and fragments downloaded from the master for this build
    work/stage      the installed kernel (boot/, lib/modules/) every package format starts from
    work/pkg        the package uploaded to the master

Every make runs with the LOCALVERSION environment variable unset (``env -u`` below and ``None`` in the
step's env): setting it, even empty, makes Kbuild drop the ``+`` of the naming contract.
"""

from __future__ import annotations

import shlex

from buildbot_kernel import formats
from buildbot_kernel.settings import Build

FACTS_SCRIPT = r"""set -e
cd src
printf 'kernelversion=%s\n' "$(make -s kernelversion 2>/dev/null)"
printf 'localversion_files=%s\n' "$(cat localversion* 2>/dev/null | tr -d ' \n')"
i=0
for f in localversion*; do
  [ -f "$f" ] || continue
  i=$((i + 1))
  printf 'localversion.%d=%s\t%s\n' "$i" "$(printf '%s' "$f" | tr -c 'A-Za-z0-9._+~-' '?')" \
    "$(head -c 300 "$f" | tr -d ' \n' | tr '\r\t' '??')"
done
if git describe --exact-match HEAD >/dev/null 2>&1; then echo at_tag=1; else echo at_tag=0; fi
git log -1 --format='sha=%H%ncommitter_ts=%ct%nauthor=%an <%ae>%nsubject=%s' HEAD
printf 'cpus=%s\n' "$(nproc 2>/dev/null || echo 1)"
printf 'compiler=%s\n' "$(${CROSS_COMPILE}gcc --version 2>/dev/null | head -n1)"
if command -v ccache >/dev/null 2>&1; then echo ccache=1; else echo ccache=0; fi
"""


def make_args(build: Build) -> list[str]:
    """Arguments every make call shares: out-of-tree, arch, cross compiler."""
    args = ["make", "-C", "src", "O=../obj", f"ARCH={kernel_arch(build.arch)}"]
    if build.cross_compile:
        args.append(f"CROSS_COMPILE={build.cross_compile}")
    return args


def kernel_arch(arch: str) -> str:
    """Kbuild's ARCH for a settings arch (x86_64 builds with ARCH=x86_64, which Kbuild maps to x86)."""
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(arch, arch)


def _make(build: Build, *targets: str, extra: list[str] | None = None) -> str:
    return "env -u LOCALVERSION " + " ".join(shlex.quote(a) for a in make_args(build) + (extra or []) +
                                             list(targets))


def configure_script(build: Build, localversion: str, fragment_count: int, full_config: bool) -> str:
    """Base config (a make target or a downloaded full .config), fragments on top, then the localversion.

    Fragments are appended and resolved by ``olddefconfig``: Kconfig lets the last assignment of a
    symbol win, which is what scripts/kconfig/merge_config.sh does too.  CONFIG_LOCALVERSION_AUTO is
    switched off because it would append ``-g<sha>`` and break the naming contract.
    """
    lines = ["set -e", "mkdir -p obj"]
    if full_config:
        lines.append("cp fragments/base.config obj/.config")
    else:
        lines.append(_make(build, build.config))
    for i in range(fragment_count):
        lines.append(f"cat fragments/{i}.config >> obj/.config")
    lv = localversion.replace('"', "")
    lines += [
        "sed -i -e '/^CONFIG_LOCALVERSION=/d' -e '/^# CONFIG_LOCALVERSION is not set/d' "
        "-e '/^CONFIG_LOCALVERSION_AUTO=/d' -e '/^# CONFIG_LOCALVERSION_AUTO is not set/d' obj/.config",
        f"echo {shlex.quote(f'CONFIG_LOCALVERSION={chr(34)}{lv}{chr(34)}')} >> obj/.config",
        "echo '# CONFIG_LOCALVERSION_AUTO is not set' >> obj/.config",
        _make(build, "olddefconfig"),
        f"grep -qxF {shlex.quote(f'CONFIG_LOCALVERSION={chr(34)}{lv}{chr(34)}')} obj/.config || "
        "{ echo 'error: CONFIG_LOCALVERSION did not survive olddefconfig' >&2; exit 1; }",
        "echo \"config: $(grep -c '=' obj/.config) symbols set\"",
    ]
    return "\n".join(lines) + "\n"


def build_identity(timestamp: str) -> dict[str, str]:
    """What Kbuild bakes into the image besides the source: fixed, so a rebuild (and ccache) matches."""
    return {"KBUILD_BUILD_TIMESTAMP": timestamp, "KBUILD_BUILD_USER": "buildbot",
            "KBUILD_BUILD_HOST": "buildbot-kernel"}


def compile_command(build: Build, jobs: int, use_ccache: bool, timestamp: str) -> list[str]:
    """The build itself: default target (image + modules) with reproducible build identity."""
    extra = [f"-j{jobs}"] + [f"{k}={v}" for k, v in build_identity(timestamp).items()]
    if use_ccache:
        extra.append(f"CC=ccache {build.cross_compile}gcc")
    return ["env", "-u", "LOCALVERSION"] + make_args(build) + extra


def kernelrelease_command(build: Build) -> list[str]:
    return ["env", "-u", "LOCALVERSION"] + make_args(build) + ["-s", "kernelrelease"]


def package_script(build: Build, name: str) -> str:
    """Stage the installed kernel, then run every package format the build makes (buildbot_kernel/formats)
    and leave the worker's own checksums for transfer checking.

    ``stage/`` is the installed layout every format starts from: ``boot/vmlinuz-<name>``,
    ``boot/config-<name>``, ``boot/System.map-<name>`` and ``lib/modules/<name>/``.
    """
    mk = _make(build, "-s", "image_name")
    boot = shlex.quote(f"stage/boot/vmlinuz-{name}")
    lines = [
        "set -e",
        "rm -rf pkg stage && mkdir -p pkg stage/boot",
        f"image=$({mk})",
        f"cp \"obj/$image\" {boot}",
        f"cp obj/.config {shlex.quote(f'stage/boot/config-{name}')}",
        f"cp obj/System.map {shlex.quote(f'stage/boot/System.map-{name}')}",
        "if grep -qx 'CONFIG_MODULES=y' obj/.config; then",
        "  " + _make(build, "modules_install", "INSTALL_MOD_STRIP=1") + ' INSTALL_MOD_PATH="$PWD/stage"',
        "else",
        f"  mkdir -p {shlex.quote(f'stage/lib/modules/{name}')}",
        "  echo 'modules disabled in this config: empty modules tree'",
        "fi",
    ]
    lines += [fmt.shell(name, build) for fmt in formats.selected(build.packages)]
    lines += [
        "(cd pkg && sha256sum -- * > ../pkg.sha256) && mv pkg.sha256 pkg/.worker.sha256",
        "ls -l pkg",
    ]
    return "\n".join(lines) + "\n"
