"""scripts/prepare-linux-tree on a fixture tarball shaped like Debian's linux-source (a few files whose
Makefile answers the two targets the script calls): pruning, the .gitignore fix, the cache, reproducible
commits, tags and refusals.  Fast, so not marked realkernel; the real tarball goes through it in the
realkernel tests."""

from __future__ import annotations

import subprocess
import tarfile
import time
from pathlib import Path

import kbuild_helper
import pytest

VERSION = "6.1.99"
FIXTURE_MAKEFILE = f"""\
# fixture: answers the targets prepare-linux-tree calls; allnoconfig fails if a sourced Kconfig is gone
kernelversion:
\t@echo {VERSION}
allnoconfig:
\t@for f in Kconfig crypto/Kconfig arch/arm/crypto/Kconfig arch/arm/crypto/Kconfig.more \\
\t  Documentation/Kconfig arch/x86/Kconfig; do test -f $$f || {{ echo "missing $$f"; exit 1; }}; done
"""
FILES = {
    "Makefile": FIXTURE_MAKEFILE,
    "Kconfig": 'source "arch/Kconfig"\nsource "crypto/Kconfig"\nsource "Documentation/Kconfig"\n',
    "arch/Kconfig": 'source "arch/$(SRCARCH)/Kconfig"\n',
    "crypto/Kconfig": 'if ARM\nsource "arch/arm/crypto/Kconfig"\nendif\n',
    "arch/arm/crypto/Kconfig": 'source "arch/arm/crypto/Kconfig.more"\n',
    "arch/arm/crypto/Kconfig.more": "config ARM_CRYPTO_MORE\n\tbool\n",
    "arch/arm/kernel/head.S": "/* arm only */\n",
    "arch/arm64/Kconfig": "config ARM64\n\tdef_bool y\n",
    "arch/x86/Kconfig": "config X86\n\tdef_bool y\n",
    "arch/x86/kernel/setup.c": "int x86;\n",
    "Documentation/Kconfig": "config WARN_MISSING_DOCUMENTS\n\tbool\n",
    "Documentation/Makefile": "subdir- := devicetree/bindings\n",
    "Documentation/devicetree/bindings/Makefile": "# clean only\n",
    "Documentation/admin-guide/README.rst": "docs\n",
    "tools/perf/perf.c": "int perf;\n",
    "tools/testing/selftests/Makefile": "all:\n",
    "tools/objtool/objtool.c": "int objtool;\n",
    "firmware/blob.bin": "\x00\x01",
    ".gitignore": ".*\n!.gitignore\n*.bin\n/vmlinux\n#\n"
    "# Debian packaging: ignore everything at the top level, since it isn't\n"
    "# included in our repository\n#\n/*\n!/debian/\n",
}


def _tarball(path: Path, files: dict[str, str], mtime: int = 1_700_000_000) -> Path:
    src = path.parent / (path.name + ".d") / "linux-source-6.1"
    for name, text in files.items():
        f = src / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    with tarfile.open(path, "w:xz") as tar:
        for f in sorted(src.rglob("*")):
            info = tar.gettarinfo(f, arcname=f.relative_to(src.parent).as_posix())
            info.mtime = mtime
            if f.is_file():
                with f.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return path


def _prepare(tarball: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(kbuild_helper.PREPARE_SCRIPT), "--source", str(tarball), *extra, str(dest)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def tarball(tmp_path):
    return _tarball(tmp_path / "linux-source-6.1.tar.xz", FILES)


def test_prepared_tree_is_pruned_committed_and_clean(tarball, tmp_path):
    dest = tmp_path / "tree"
    out = _prepare(tarball, dest)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(dest)
    tracked = set(_git(dest, "ls-files").split())
    assert {"arch/x86/kernel/setup.c", "arch/arm/crypto/Kconfig", "arch/arm/crypto/Kconfig.more"} <= tracked
    assert {
        "Documentation/Kconfig",
        "Documentation/devicetree/bindings/Makefile",
        "tools/objtool/objtool.c",
    } <= tracked
    assert "firmware/blob.bin" in tracked  # every tarball file is source, even if an ignore rule matches
    for dropped in ("arch/arm/kernel/head.S", "arch/arm64/Kconfig", "Documentation/admin-guide/README.rst",
                    "tools/perf/perf.c", "tools/testing/selftests/Makefile"):  # fmt: skip
        assert dropped not in tracked and not (dest / dropped).exists()
    assert _git(dest, "status", "--porcelain") == ""
    assert "/*" not in (dest / ".gitignore").read_text().splitlines()
    (dest / "NEWFILE").write_text("x")  # with Debian's block, a new top-level file would be ignored
    assert _git(dest, "status", "--porcelain", "--untracked-files=all") == "?? NEWFILE\n"
    log = _git(dest, "log", "--format=%an <%ae> %at %ct %s").strip()
    assert log == f"prepare-linux-tree <prepare-linux-tree@buildbot-kernel.invalid> 1700000000 1700000000 " \
        f"Linux {VERSION} from linux-source-6.1.tar.xz"  # fmt: skip
    assert _git(dest, "tag") == ""  # untagged: kernelrelease gets its '+'
    assert _git(dest, "config", "gc.auto").strip() == "0"  # no background repack racing the first build
    counts = dict(line.split(": ") for line in _git(dest, "count-objects", "-v").splitlines())
    assert counts["count"] == "0" and counts["packs"] == "1", counts  # clones copy one pack, not compress


def test_a_tree_prepared_loose_is_packed_by_the_next_call(tarball, tmp_path):
    """Trees prepared before the script packed them get their pack on the next (cached) call."""
    dest = tmp_path / "tree"
    assert _prepare(tarball, dest).returncode == 0
    packed = tmp_path / "old.pack"
    next((dest / ".git/objects/pack").glob("*.pack")).rename(packed)
    for f in (dest / ".git/objects/pack").iterdir():
        f.unlink()
    with open(packed, "rb") as f:  # the tree as it was before the script packed it: loose objects
        subprocess.run(["git", "-C", str(dest), "unpack-objects", "-q"], stdin=f, check=True)
    assert dict(line.split(": ") for line in _git(dest, "count-objects", "-v").splitlines())["packs"] == "0"
    assert _prepare(tarball, dest).returncode == 0
    counts = dict(line.split(": ") for line in _git(dest, "count-objects", "-v").splitlines())
    assert counts["count"] == "0" and counts["packs"] == "1", counts


def test_second_call_reuses_the_tree(tarball, tmp_path):
    dest = tmp_path / "tree"
    assert _prepare(tarball, dest).returncode == 0
    (dest / "marker").write_text("kept")
    start = time.monotonic()
    again = _prepare(tarball, dest)
    assert again.returncode == 0 and again.stdout.strip() == str(dest)
    assert (dest / "marker").read_text() == "kept", "a valid prepared tree must not be rebuilt"
    assert time.monotonic() - start < 10


def test_same_tarball_gives_the_same_commit(tarball, tmp_path):
    assert _prepare(tarball, tmp_path / "a").returncode == 0
    assert _prepare(tarball, tmp_path / "b").returncode == 0
    assert _git(tmp_path / "a", "rev-parse", "HEAD") == _git(tmp_path / "b", "rev-parse", "HEAD")


def test_another_tarball_rebuilds_the_tree(tarball, tmp_path):
    dest = tmp_path / "tree"
    assert _prepare(tarball, dest).returncode == 0
    first = _git(dest, "rev-parse", "HEAD")
    other = _tarball(tmp_path / "other" / "linux-source-6.1.tar.xz", {**FILES, "kernel/new.c": "int n;\n"})
    out = _prepare(other, dest)
    assert out.returncode == 0, out.stderr
    assert "rebuilding" in out.stderr
    assert _git(dest, "rev-parse", "HEAD") != first and (dest / "kernel" / "new.c").exists()


def test_tag_option_makes_a_release_checkout(tarball, tmp_path):
    dest = tmp_path / "tree"
    assert _prepare(tarball, dest, "--tag", "v6.1.99").returncode == 0
    assert _git(dest, "cat-file", "-t", "v6.1.99").strip() == "tag"  # annotated: setlocalversion sees it
    assert _git(dest, "describe", "--exact-match").strip() == "v6.1.99"


def test_foreign_destination_is_refused_and_untouched(tarball, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious").write_text("x")
    out = _prepare(tarball, dest)
    assert out.returncode == 2
    assert "was not prepared by this script" in out.stderr
    assert (dest / "precious").read_text() == "x"


def test_missing_tarball_says_which_package(tmp_path):
    out = _prepare(tmp_path / "nope.tar.xz", tmp_path / "tree")
    assert out.returncode == 2 and "linux-source-6.1" in out.stderr
    assert not (tmp_path / "tree").exists()


def test_pruned_tree_that_does_not_configure_is_never_stamped(tmp_path):
    broken = dict(FILES)
    del broken["arch/arm/crypto/Kconfig.more"]  # the fixture Makefile's allnoconfig now fails
    out = _prepare(_tarball(tmp_path / "linux-source-6.1.tar.xz", broken), tmp_path / "tree")
    assert out.returncode == 2 and "does not configure" in out.stderr and "--full" in out.stderr
    assert not (tmp_path / "tree").exists() and not (tmp_path / "tree.partial").exists()
