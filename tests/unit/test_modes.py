"""The tree's permission contract (docs/serving.md): whatever the umask and the upload's modes, what is
published, indexed, added or removed by hand ends up 0755/0644 (or 2750/0640 for a configured group)."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from buildbot_kernel.imagetree.modes import Modes, group_problem, visible_paths
from buildbot_kernel.imagetree.package import REQUIRED_FILES, staging_dir, write_manifest
from buildbot_kernel.imagetree.snippets import render, snippet_vars, standalone_nginx_conf
from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload
from buildbot_kernel.imagetree.tree import ImageTree
from buildbot_kernel.imagetree.watcher import TreeWatcher
from buildbot_kernel.resources import shipped
from buildbot_kernel.settings import SettingsError, parse

pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes_of(root: Path) -> dict[str, int]:
    """{relative path: permission bits} of every served path, the root as '.'."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *visible_paths(root)]}


def stage_like_a_worker(root: Path, branch: str, i: int) -> tuple[Path, dict]:
    """An upload as Buildbot's DirectoryUpload leaves it from a worker with umask 077: files 0600."""
    fields = image_fields(branch, i)
    stage = staging_dir(root)
    write_payload(stage, seed=fields["sha"])
    for n in REQUIRED_FILES:
        os.chmod(stage / n, 0o600)
    write_manifest(stage, fields)
    return stage, fields


def expect_world_readable(root: Path) -> None:
    got = modes_of(root)
    want = {rel: (0o755 if (root / rel).is_dir() else 0o644) for rel in got}
    assert got == want
    assert Modes().unreadable(root) == []


def test_publish_under_umask_077_with_0600_worker_files_gives_0755_and_0644(served_tmp_path):
    root = served_tmp_path / "images"
    with umask(0o077):
        tree = ImageTree(root, "http://h/")
        stage, fields = stage_like_a_worker(root, "drm/next", 1)
        target = tree.publish(stage, fields["branch"], fields["name"])
        target2 = make_image(root, "drm/next", 2)
        tree.published(target2)
    got = modes_of(root)
    # every kind of path the contract names, and nothing else unexpected
    rel = str(target.relative_to(root))
    for name in ("index.json", "index.html", "drm-next", "drm-next/index.json", "drm-next/index.html",
                 "drm-next/latest", rel, *(f"{rel}/{n}" for n in (*REQUIRED_FILES, "metadata.json", "SHA256SUMS"))):
        assert name in got, name
    assert got["."] == 0o755 and got["drm-next"] == 0o755 and got[rel] == 0o755
    assert got[f"{rel}/vmlinuz"] == 0o644 and got["drm-next/latest"] == 0o644
    expect_world_readable(root)


def test_group_policy_setgid_dirs_and_0640_files_of_the_group(served_tmp_path):
    # root may hand files to any group; anyone else to a group of their own
    group = "www-data" if os.geteuid() == 0 and group_problem("www-data") is None else \
        grp.getgrgid(os.getegid()).gr_name
    modes = Modes.for_group(group)
    root = served_tmp_path / "images"
    with umask(0o077):
        tree = ImageTree(root, "http://h/", modes=modes)
        stage, fields = stage_like_a_worker(root, "next", 1)
        tree.publish(stage, fields["branch"], fields["name"])
    for p in [root, *visible_paths(root)]:
        st = p.lstat()
        assert st.st_gid == modes.gid, p
        assert stat.S_IMODE(st.st_mode) == (0o2750 if p.is_dir() else 0o640), p
    assert modes.unreadable(root) == []
    other = Modes()  # the same tree is NOT world-readable, and verify's check says so
    assert len(other.unreadable(root)) == len([root, *visible_paths(root)])


def test_index_regeneration_fixes_an_image_an_admin_copied_in_with_umask_077(served_tmp_path):
    root = served_tmp_path / "images"
    tree = ImageTree(root, "http://h/")
    make_image(root, "next", 1)
    tree.regenerate()
    elsewhere = served_tmp_path / "elsewhere"
    elsewhere.mkdir()
    with umask(0o077):
        hand = make_image(elsewhere, "next", 2)
        (hand / "tests").mkdir()  # results below the image: the walk descends
        (hand / "tests" / "boot.log").write_text("booted\n")
        for p in [hand, *hand.iterdir(), *(hand / "tests").iterdir()]:
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
        subprocess.run(["cp", "-a", str(hand), str(root / "next" / hand.name)], check=True)
        os.chmod(root / "next", 0o700)  # and the admin's chmod of the branch directory
        os.chmod(root / "next" / "latest", 0o600)
    assert Modes().unreadable(root)
    result = tree.regenerate()
    assert hand.name in [i["name"] for i in result.images] and result.mode_problems == []
    expect_world_readable(root)


def test_retention_and_a_deletion_by_hand_keep_the_contract(served_tmp_path):
    root = served_tmp_path / "images"
    with umask(0o077):
        tree = ImageTree(root, "http://h/", keep_per_branch=1)
        for i in range(3):
            tree.published(make_image(root, "next", i))
        assert len(list((root / "next").iterdir())) == 1 + 3  # one image and index.json/html, latest
        shutil.rmtree(root / "next" / [d.name for d in (root / "next").iterdir() if d.is_dir()][0])
        tree.regenerate()
    expect_world_readable(root)


def test_watcher_regeneration_fixes_modes_of_a_hand_added_image(served_tmp_path):
    root = served_tmp_path / "images"
    tree = ImageTree(root, "http://h/")
    tree.regenerate()
    w = TreeWatcher(root, tree.regenerate, debounce=0.1)
    w.start()
    try:
        with umask(0o077):
            elsewhere = served_tmp_path / "elsewhere"
            elsewhere.mkdir()
            hand = make_image(elsewhere, "fresh", 1)  # a new branch directory too
            for p in [hand, *hand.iterdir()]:
                os.chmod(p, 0o700 if p.is_dir() else 0o600)
            (root / "fresh").mkdir()
            subprocess.run(["cp", "-a", str(hand), str(root / "fresh" / hand.name)], check=True)
        deadline = time.monotonic() + 10
        while (root / "fresh" / "latest").exists() is False or Modes().unreadable(root):
            assert time.monotonic() < deadline, Modes().unreadable(root)
            time.sleep(0.05)
    finally:
        w.stop()
    expect_world_readable(root)


def test_verify_reports_what_the_readers_cannot_read(served_tmp_path, capsys):
    from buildbot_kernel.commands import images

    root = served_tmp_path / "images"
    a = make_image(root, "next", 1)
    ImageTree(root, "http://h/").regenerate()

    def verify(*argv):
        import argparse

        parser = argparse.ArgumentParser()
        images.register(parser.add_subparsers())
        args = parser.parse_args(["images", "verify", *argv])
        code = args.func(args)
        return code, capsys.readouterr().out

    assert verify(str(root)) == (0, f"{a}: ok\n{root}: readable by everyone (other)\n")
    os.chmod(a / "vmlinuz", 0o600)
    os.chmod(root / "next" / "latest", 0o640)
    code, out = verify(str(root))
    assert code == 1
    assert f"unreadable: {a / 'vmlinuz'}: file mode 600" in out
    assert f"unreadable: {root / 'next' / 'latest'}: file mode 640" in out
    assert f"{a}: ok" in out  # the content is fine: only the modes are wrong
    # a directory above the tree that the readers cannot enter is reported too
    os.chmod(served_tmp_path, 0o700)
    try:
        code, out = verify(str(a))
        assert code == 1 and f"unreadable: {served_tmp_path}: mode 700" in out
    finally:
        os.chmod(served_tmp_path, 0o755)
    with pytest.raises(Exception, match="--group: group 'no-such-group-xyz' does not exist"):
        verify("--group", "no-such-group-xyz", str(a))


SETTINGS = """
[images]
group = "{group}"
[[repository]]
name = "r"
url = "https://example.org/r.git"
branches = ["main"]
build = "x86_64"
[[build]]
name = "x86_64"
[[worker]]
name = "w"
password = "p"
"""


def test_settings_group_must_exist():
    assert parse(SETTINGS.format(group="")).images.group == ""
    existing = grp.getgrgid(os.getegid()).gr_name
    assert parse(SETTINGS.format(group=existing)).images.group == existing
    with pytest.raises(SettingsError) as e:
        parse(SETTINGS.format(group="no-such-group-xyz"))
    assert "[images].group: group 'no-such-group-xyz' does not exist on this host; create it" in str(e.value)


def test_checkconfig_refuses_a_missing_group(tmp_path):
    """``buildbot checkconfig`` on a master whose settings name a group that does not exist."""
    master = tmp_path / "master"
    subprocess.run([str(Path(sys.executable).parent / "buildbot"), "create-master", "-q", str(master)],
                   check=True, capture_output=True)
    shutil.copy(shipped("master.cfg"), master / "master.cfg")
    (master / "settings.toml").write_text(SETTINGS.format(group="no-such-group-xyz"))
    r = subprocess.run([str(Path(sys.executable).parent / "buildbot"), "checkconfig", str(master)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode != 0
    assert "[images].group: group 'no-such-group-xyz' does not exist" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_config_snippets_are_not_html_escaped_and_nginx_runs_as_www_data():
    v = snippet_vars("/srv/kernels", "http://img.example.org/kernels/")
    assert "&amp;" not in render("nfs", **{**v, "nfs_clients": "@lab&co"})
    assert "@lab&co(ro,all_squash" in render("nfs", **{**v, "nfs_clients": "@lab&co"})
    conf = standalone_nginx_conf("/srv/kernels", "http://127.0.0.1:8080/", "/tmp/w")
    assert "user www-data;" in conf and "user root" not in conf
    with pytest.raises(ValueError, match="images.root"):
        snippet_vars("/srv/my kernels", "http://h/")
    with pytest.raises(ValueError, match="--nfs-clients"):
        snippet_vars("/srv/kernels", "http://h/", nfs_clients="* (rw)")


def test_index_command_keeps_a_group_tree_group_readable(served_tmp_path, capsys):
    import argparse

    from buildbot_kernel.cli import CommandError
    from buildbot_kernel.commands import index

    def run(*argv):
        parser = argparse.ArgumentParser()
        index.register(parser.add_subparsers())
        args = parser.parse_args(["index", *argv])
        return args.func(args)

    group = grp.getgrgid(os.getegid()).gr_name
    root = served_tmp_path / "images"
    ImageTree(root, "http://h/", modes=Modes.for_group(group)).published(make_image(root, "next", 1))
    assert stat.S_IMODE(root.stat().st_mode) == 0o2750
    # without --group the command would make the tree world-readable: it refuses and says what to give
    with pytest.raises(CommandError, match=f"group-readable tree .* give --group {group}"):
        run("--root", str(root), "--base-url", "http://h/")
    with umask(0o077):
        make_image(served_tmp_path / "elsewhere", "next", 2)
        subprocess.run(["cp", "-a", *map(str, (served_tmp_path / "elsewhere" / "next").iterdir()),
                        str(root / "next")], check=True)
    assert run("--root", str(root), "--base-url", "http://h/", "--group", group) == 0
    assert "2 images listed" in capsys.readouterr().out
    assert Modes.for_group(group).unreadable(root) == []
    assert {stat.S_IMODE(p.lstat().st_mode) for p in visible_paths(root)} == {0o2750, 0o640}


def test_symlinks_in_the_tree_never_get_their_targets_changed(served_tmp_path):
    """With a master running as root, chmod through a planted symlink could open any file of the host."""
    root = served_tmp_path / "images"
    outside = served_tmp_path / "outside"
    outside.mkdir(mode=0o700)
    secret = outside / "secret"
    secret.write_text("s")
    secret.chmod(0o600)
    a = make_image(root, "next", 1)
    (a / "link-to-secret").symlink_to(secret)
    (a / "link-to-dir").symlink_to(outside)
    (root / "next" / "latest").symlink_to(secret)  # where a generated file would be
    stage, fields = stage_like_a_worker(root, "next", 2)
    (stage / "evil").symlink_to(secret)
    tree = ImageTree(root, "http://h/")
    tree.publish(stage, fields["branch"], fields["name"])
    assert Modes().apply_tree(a) == []
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(outside.stat().st_mode) == 0o700
