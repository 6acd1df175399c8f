"""The permission contract of the image tree: who can read what is published (docs/serving.md).

Apache, nginx and NFS (root_squash/all_squash map clients to ``nobody``) read the tree as an unprivileged
user, never as the master's user.  Buildbot's DirectoryUpload keeps the worker's file modes and a
daemonized master runs with umask 077, so nothing published can rely on the modes it arrived with: every
writer of the tree passes what it wrote through one ``Modes`` policy.  Two policies:

- world-readable (default, ``[images] group = ""``): directories 0755, files 0644;
- group-readable (``[images] group = "www-data"``): directories 2750 (setgid, so what an admin copies in
  inherits the group), files 0640, group set to that group.  The master's user must be a member of the
  group (or root) to hand files to it.

Hidden names (``.incoming``, ``.trash``, ``.state``, temp files) are never served and keep their modes;
symlinks are left alone (chmod would follow them out of the tree).
"""

from __future__ import annotations

import grp
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.atomic import is_temp_name

WORLD_DIR, WORLD_FILE = 0o755, 0o644
GROUP_DIR, GROUP_FILE = 0o2750, 0o640
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # a directory, never through a symlink


class ModeError(BuildbotKernelError):
    """A path could not be given the contract's mode or group; the message says why and the fix."""


def group_problem(group: str) -> str | None:
    """Why ``[images] group`` cannot be used (None when it can): the group must exist on this host."""
    if not group:
        return None
    try:
        grp.getgrnam(group)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return (f"group {group!r} does not exist on this host; create it (groupadd {group}), name the group "
                "the web server or NFS readers belong to (e.g. \"www-data\"), or set \"\" for world-readable")
    return None


@dataclass(frozen=True)
class Modes:
    """One policy; ``gid`` is -1 for world-readable."""

    group: str = ""
    gid: int = -1

    @classmethod
    def for_group(cls, group: str = "") -> Modes:
        problem = group_problem(group)
        if problem:
            raise ValueError(f"images.group: {problem}")
        return cls(group, grp.getgrnam(group).gr_gid) if group else cls()

    @property
    def dir_mode(self) -> int:
        return GROUP_DIR if self.group else WORLD_DIR

    @property
    def file_mode(self) -> int:
        return GROUP_FILE if self.group else WORLD_FILE

    @property
    def readers(self) -> str:
        return f"group {self.group!r}" if self.group else "everyone (other)"

    def wanted(self, st: os.stat_result) -> int | None:
        """The contract's mode for a path with this stat; None for what the contract leaves alone."""
        if stat.S_ISDIR(st.st_mode):
            return self.dir_mode
        if stat.S_ISREG(st.st_mode):
            return self.file_mode
        return None

    def apply(self, path: str | os.PathLike, *, dir_fd: int | None = None, follow: bool = False,
              label: str | os.PathLike | None = None) -> bool:
        """Give one path the contract's group and mode; True if anything changed.  Raises ModeError.

        The path is opened once (O_PATH, not following a symlink unless ``follow``) and changed through
        that descriptor, so a path swapped for a symlink meanwhile never gets its target changed (with a
        master running as root, the target could be any file of the host).
        """
        return self._with_fd(path, dir_fd, follow, label, self._apply_fd)

    def _with_fd(self, path, dir_fd, follow, label, action):
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return action(None, label or path)  # deleted meanwhile (retention, an admin)
        except PermissionError:
            raise ModeError(self._denied(label or path)) from None
        try:
            return action(fd, label or path)
        finally:
            os.close(fd)

    def _apply_fd(self, fd: int | None, label, st: os.stat_result | None = None) -> bool:
        if fd is None:
            return False
        st = st or os.fstat(fd)
        want = self.wanted(st)  # a symlink opened with O_NOFOLLOW is the link itself: None
        if want is None or not self._off(st, want):
            return False
        handle = f"/proc/self/fd/{fd}"  # chmod/chown through it reach exactly the opened inode
        changed = False
        try:
            # chown first: a chown by a non-root user clears the setgid bit chmod sets
            if self.gid != -1 and st.st_gid != self.gid:
                os.chown(handle, -1, self.gid)
                changed = True
            if changed or stat.S_IMODE(st.st_mode) != want:
                os.chmod(handle, want)
                changed = True
        except PermissionError:
            raise ModeError(self._denied(label)) from None
        return changed

    def _off(self, st: os.stat_result, want: int) -> bool:
        return stat.S_IMODE(st.st_mode) != want or (self.gid != -1 and st.st_gid != self.gid)

    def _denied(self, path) -> str:
        if self.group:
            return (f"{path}: cannot give it group {self.group!r} and mode {self.file_mode:o}/{self.dir_mode:o}: "
                    f"the master's user must own it and be a member of {self.group!r} "
                    f"(usermod -aG {self.group} USER); the tree's readers may not be able to read it")
        return (f"{path}: cannot set mode {self.file_mode:o}/{self.dir_mode:o}: the master's user does not own "
                "it; chown it to that user (the tree's readers may not be able to read it)")

    def _collect(self, problems: list[str], path, **kw) -> None:
        try:
            self.apply(path, **kw)
        except ModeError as e:
            problems.append(str(e))

    def apply_each(self, paths) -> list[str]:
        """Apply the contract to each path; the paths that failed, each with its reason (the rest is still
        fixed)."""
        problems: list[str] = []
        for path in paths:
            self._collect(problems, path)
        return problems

    def apply_dir(self, path: str | os.PathLike, names=(), follow: bool = False) -> list[str]:
        """A directory and the given entries in it (those that exist), reached through the directory's
        descriptor; ``follow`` for the tree root, which an admin may make a symlink."""
        problems: list[str] = []

        def entries(fd, label):
            if fd is None or not stat.S_ISDIR(os.fstat(fd).st_mode):
                return
            self._collect(problems, ".", dir_fd=fd, follow=True, label=label)  # "." of the opened directory
            for name in names:
                self._collect(problems, name, dir_fd=fd, label=os.path.join(label, name))

        try:
            self._with_fd(path, None, follow, None, entries)
        except ModeError as e:
            problems.append(str(e))
        return problems

    def apply_tree(self, top: str | os.PathLike) -> list[str]:
        """``top`` and every non-hidden path below it, walked through directory descriptors that never
        follow a symlink, so nothing outside ``top`` is ever changed.  Each entry costs one ``fstatat``;
        only an entry whose mode or group is off is opened and fixed (:meth:`apply` re-checks the opened
        inode), which keeps the first regeneration of 10,000 images cheap."""
        try:
            fd = os.open(top, DIR_FLAGS)
        except PermissionError:  # a directory its owner cannot list (mode 0 or 0300): fixed first, then read
            problems = self.apply_each([top])
            try:
                fd = os.open(top, DIR_FLAGS)
            except OSError:
                return problems
        except OSError:
            return self.apply_each([top])  # gone meanwhile, a symlink or not a directory: nothing below it
        try:
            return self.apply_listing(fd, os.fspath(top), os.fstat(fd), list_dir(fd))
        finally:
            os.close(fd)

    def apply_listing(self, fd: int, label: str, dir_stat: os.stat_result,
                      entries: dict[str, os.stat_result]) -> list[str]:
        """:meth:`apply_tree` for a directory its caller has already open at ``fd`` (not closed here) and
        listed (``list_dir``): the scanner reads an image in one pass and hands over what it saw."""
        problems: list[str] = []
        want = self.wanted(dir_stat)
        if want is not None and self._off(dir_stat, want):
            try:
                self._apply_fd(fd, label, dir_stat)
            except ModeError as e:
                problems.append(str(e))
        self._fix_entries(fd, label, entries, problems)
        return problems

    def _fix_entries(self, fd: int, label: str, entries: dict[str, os.stat_result], problems: list[str]) -> None:
        """Fix the entries of the directory open at ``fd``, then descend (top-down, so a directory is made
        readable before it is entered)."""
        subdirs = []
        # the common case first, one set lookup per entry: a first scan of 10,000 images checks 70,000
        right, gid = {stat.S_IFDIR | self.dir_mode, stat.S_IFREG | self.file_mode}, self.gid
        for name, st in entries.items():
            if st.st_mode in right and (gid == -1 or st.st_gid == gid):
                if stat.S_ISDIR(st.st_mode) and not is_temp_name(name):
                    subdirs.append(name)
                continue
            if is_temp_name(name):
                continue
            want = self.wanted(st)
            if want is not None and self._off(st, want):
                self._collect(problems, name, dir_fd=fd, label=os.path.join(label, name))
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(name)
        for name in subdirs:
            try:
                sub = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, swapped for a symlink, or unreadable (reported by the fix above)
            try:
                self._fix_entries(sub, os.path.join(label, name), list_dir(sub), problems)
            finally:
                os.close(sub)

    def can_read(self, st: os.stat_result) -> bool:
        """Can the configured readers read (a file) or list and enter (a directory) this?  Owner bits do not
        count: the readers are never the master's user.  ACLs are not looked at."""
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
        return self._bits(st) & need == need

    def can_traverse(self, st: os.stat_result) -> bool:
        return bool(self._bits(st) & stat.S_IXOTH)

    def _bits(self, st: os.stat_result) -> int:
        """The rwx bits that apply to the readers: the group's on a path of their group, else other's."""
        if self.gid != -1 and st.st_gid == self.gid:
            return (st.st_mode >> 3) & 0o7
        return st.st_mode & 0o7

    def unreadable(self, top: str | os.PathLike) -> list[str]:
        """Every path the readers cannot reach or read: the directories above ``top`` they must traverse,
        ``top`` itself and every non-hidden path below it, each with its mode."""
        out = []
        top = Path(top).absolute()
        for parent in reversed(top.parents):
            st = os.stat(parent)
            if not self.can_traverse(st):
                out.append(f"{parent}: mode {stat.S_IMODE(st.st_mode):o}: {self.readers} cannot enter it "
                           "(a directory above the tree)")
        for path in [top, *visible_paths(top)]:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if self.wanted(st) is not None and not self.can_read(st):
                kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
                out.append(f"{path}: {kind} mode {stat.S_IMODE(st.st_mode):o} group {_group_name(st.st_gid)}: "
                           f"{self.readers} cannot read it")
        return out


def list_dir(fd: int) -> dict[str, os.stat_result]:
    """Each entry of the directory open at ``fd`` with its ``lstat``; an entry removed meanwhile is left
    out.  ``fd`` stays open (scandir lists a duplicate)."""
    out = {}
    with os.scandir(fd) as it:
        for e in it:
            try:
                out[e.name] = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
    return out


def visible_paths(top: str | os.PathLike) -> list[Path]:
    """Every path below ``top`` that is served: hidden names (and all below them) left out, symlinks not
    followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not is_temp_name(d))
        out.extend(Path(dirpath, n) for n in dirnames)
        out.extend(Path(dirpath, n) for n in sorted(filenames) if not is_temp_name(n))
    return out


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


WORLD_READABLE = Modes()  # the default policy (frozen, so safe as a shared default argument)
