"""The image directory contract (docs/index-format.md): what one published image is, and how it gets there.

An image is ``<root>/<safe branch>/<name>/`` holding ``vmlinuz``, ``config``, ``System.map``,
``modules.tar.xz``, ``build.log.xz``, ``reproducer.sh``, optional ``*.deb``, ``metadata.json`` and
``SHA256SUMS``.  The manifest lists every
file with its size and sha256 twice on purpose: ``metadata.json`` for programs (index, bisect, test farm)
and ``SHA256SUMS`` so a person can run ``sha256sum -c`` on the NFS tree.  Publishing is one directory
rename from a staging directory on the same filesystem, so nobody ever sees half an image.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson

from buildbot_kernel import formats, jsondepth
from buildbot_kernel.digest import sha256_file
from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree import reserved
from buildbot_kernel.imagetree.atomic import atomic_write, is_temp_name
from buildbot_kernel.imagetree.modes import WORLD_READABLE, Modes
from buildbot_kernel.naming import safe_branch

SCHEMA = 1
METADATA = "metadata.json"
SUMS = "SHA256SUMS"
MANIFEST_FILES = (METADATA, SUMS)
# every image holds the files of the formats built always (tar); one that lists more formats in its
# ``packages`` field holds theirs too (buildbot_kernel/formats/)
REQUIRED_FILES = formats.always_required()
REQUIRED_FIELDS = (
    "name", "repository", "url", "branch", "sha", "subject", "author",
    "commit_date", "build_date", "build", "arch", "kernelrelease",
)
DATE_FIELDS = ("commit_date", "build_date")
# directories of the tree that are never branches: staging, deletion in progress, server state
INCOMING = ".incoming"
TRASH = ".trash"
STATE = ".state"
RESERVED_DIRS = (INCOMING, TRASH, STATE)

MAX_SMALL_FILE = 16 << 20  # a manifest or test result: a few KB; more is not one of ours
_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)\Z")
_SUMS_LINES = re.compile(r"^([0-9a-f]{64}) [ *](.+)$", re.MULTILINE)
_OTHER_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # str.splitlines' besides \n


class ImageExists(BuildbotKernelError):
    """The target image directory is already published (same branch and name)."""


class CorruptImage(BuildbotKernelError):
    """A staging directory failed verification; ``problems`` says what, the directory is kept."""

    def __init__(self, image_dir_or_problems, problems: list[str] | None = None):
        # CorruptImage(dir, problems) or CorruptImage(problems) when there is no directory to name
        if problems is None:
            image_dir, problems = "", image_dir_or_problems
        else:
            image_dir = image_dir_or_problems
        self.image_dir = str(image_dir)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__((f"{image_dir}: " if image_dir else "") + "; ".join(self.problems))


def image_files(image_dir: str | os.PathLike) -> list[str]:
    """The payload file names of an image directory: regular files, minus manifests and hidden files."""
    names = []
    with os.scandir(image_dir) as it:
        for e in it:
            if e.name in MANIFEST_FILES or is_temp_name(e.name):
                continue
            if e.is_file(follow_symlinks=False):
                names.append(e.name)
    return sorted(names)


def field_problems(fields: dict) -> list[str]:
    """What is wrong with the metadata fields, each message naming the field and what is expected."""
    return value_problems(fields) + encoding_problems(fields)


def value_problems(fields: dict) -> list[str]:
    """``field_problems`` less the encoding check, for fields ``read_metadata`` already checked."""
    try:  # the common case in C: every required field a string with more than blanks (a TypeError: not one)
        complete = all(map(str.strip, map(fields.get, REQUIRED_FIELDS)))
    except TypeError:
        complete = False
    problems = [] if complete else [
        f"metadata field '{key}' is missing or empty; expected a non-empty string"
        for key in REQUIRED_FIELDS if not isinstance(v := fields.get(key), str) or not v.strip()]
    sha = fields.get("sha")
    if isinstance(sha, str) and sha and not _SHA_RE.match(sha):
        problems.append(f"metadata field 'sha' is {sha!r}; expected the full lowercase hex commit id "
                        "(40 or 64 digits)")
    for key in DATE_FIELDS:
        v = fields.get(key)
        if isinstance(v, str) and v:
            try:
                parsed = datetime.fromisoformat(v)
            except ValueError:
                problems.append(f"metadata field '{key}' is {v!r}; expected an ISO 8601 time in UTC "
                                "such as 2013-07-18T09:30:00Z")
                continue
            if parsed.tzinfo is None:
                problems.append(f"metadata field '{key}' is {v!r}; expected a time zone (UTC, 'Z')")
    name, release = fields.get("name"), fields.get("kernelrelease")
    if isinstance(name, str) and name and isinstance(release, str) and release and name != release:
        problems.append(f"metadata field 'kernelrelease' is {release!r} but 'name' is {name!r}; "
                        "they must be equal (the image name is the kernel's release string)")
    if isinstance(name, str) and ("/" in name or name.startswith(".") or name in ("", "..")):
        problems.append(f"metadata field 'name' is {name!r}; expected one path component not starting "
                        "with '.'")
    return problems


def encoding_problems(fields: dict) -> list[str]:
    """Fields the index cannot write as UTF-8 JSON (a lone surrogate from a ``\\udc80`` escape or an
    undecodable file name): such an image is left out of the index instead of breaking it for all."""
    try:  # one encoding of the whole; field by field only to name what fails
        json.dumps(fields, ensure_ascii=False).encode("utf-8")
        return []
    except (UnicodeEncodeError, TypeError, ValueError):
        pass
    problems = []
    for key, value in fields.items():
        try:
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            problems.append(f"metadata field {key!r} cannot be encoded as UTF-8 ({e.reason} at position "
                            f"{e.start}); rewrite metadata.json with valid text")
        except (TypeError, ValueError) as e:  # not from json.loads, but a caller may pass anything
            problems.append(f"metadata field {key!r} cannot be written as JSON: {e}")
    return problems


def _sums_text(files: dict) -> str:
    return "".join(f"{files[n]['sha256']}  {n}\n" for n in sorted(files))


def parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` output -> {file name: hex}; raises ValueError on a line that is not of that form."""
    lines = text.splitlines()
    # every well-formed line in one call (a first scan parses 10,000 of these), when "\n" is the only
    # line break (splitlines knows others) and every line that is not blank matched
    if not _OTHER_LINE_BREAKS.search(text):
        pairs = _SUMS_LINES.findall(text)
        if len(pairs) == sum(1 for line in lines if line.strip()):
            return {name: digest for digest, name in pairs}
    out = {}  # a line is not of that form (or an unusual line break): line by line, to say which
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _SUMS_LINE.match(line)
        if not m:
            raise ValueError(f"{SUMS} line {i} is not '<sha256>  <file>': {line[:80]!r}")
        out[m.group(2)] = m.group(1)
    return out


def write_manifest(image_dir: str | os.PathLike, fields: dict) -> dict:
    """Hash every payload file and write ``metadata.json`` and ``SHA256SUMS`` (each atomically).

    ``fields`` carries the required fields (``REQUIRED_FIELDS``) and any extra ones (compiler,
    build_seconds, config_id...), which pass through unchanged.  Raises ValueError naming a missing or
    malformed field before anything is written.
    """
    problems = field_problems(fields)
    if problems:
        raise ValueError("; ".join(problems))
    image_dir = Path(image_dir)
    files = {}
    for name in image_files(image_dir):
        p = image_dir / name
        files[name] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    metadata = {k: v for k, v in fields.items() if k not in ("schema", "files")}
    metadata["schema"] = SCHEMA
    metadata["files"] = files
    atomic_write(image_dir / SUMS, _sums_text(files))
    atomic_write(image_dir / METADATA, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return metadata


def read_metadata(image_dir: str | os.PathLike, dir_fd: int | None = None, size: int = 1 << 16) -> dict:
    """Parsed ``metadata.json`` (of ``image_dir``, or of the directory open at ``dir_fd``; ``size`` as in
    ``read_bytes``); raises ValueError (unreadable, not JSON, not an object, text UTF-8 cannot encode)."""
    try:
        raw = read_bytes(METADATA if dir_fd is not None else os.path.join(image_dir, METADATA), dir_fd, size)
    except OSError as e:
        raise ValueError(f"{METADATA}: cannot read: {e.strerror}") from None
    try:
        data = orjson.loads(raw)  # strict: also refuses a lone surrogate, which UTF-8 cannot encode
    except orjson.JSONDecodeError as e:
        raise ValueError(_json_problem(raw, e)) from None
    if not isinstance(data, dict):
        raise ValueError(f"{METADATA}: expected a JSON object")
    return jsondepth.check_depth(raw, data, METADATA)  # orjson reads 1024 levels, and writes 254


def _json_problem(raw: bytes, strict_error: Exception) -> str:
    """Why ``metadata.json`` was refused, naming the field when it is a text UTF-8 cannot encode (what
    the lenient parser accepts and the strict one does not)."""
    try:
        lenient = jsondepth.loads(raw, METADATA)  # also deeper than even orjson reads (1024 levels)
    except jsondepth.TooDeep as e:
        return str(e)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{METADATA}: not valid JSON: {e}"
    problems = encoding_problems(lenient) if isinstance(lenient, dict) else []
    return "; ".join(problems) or f"{METADATA}: not valid JSON: {strict_error}"


def read_bytes(path: str, dir_fd: int | None = None, size: int = 1 << 16) -> bytes:
    """A small file's bytes (``path`` relative to ``dir_fd`` if given), without a buffered file object.
    ``size``: what a stat said it holds, so a file that did not change is read in one call (asking for
    one byte more sees the end).  The tree is written by others: a FIFO put in a manifest's place does
    not block the open (O_NONBLOCK; it reads as empty), and a symlink to ``/dev/zero`` or a huge file
    stops at ``MAX_SMALL_FILE`` bytes with a ValueError instead of filling the master's memory."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        chunks = [os.read(fd, min(size, MAX_SMALL_FILE) + 1)]
        total = len(chunks[0])
        if total != size:  # grown, shrunk or a short read: read on to the end
            while total <= MAX_SMALL_FILE and (chunk := os.read(fd, 1 << 16)):
                chunks.append(chunk)
                total += len(chunk)
        if total > MAX_SMALL_FILE:
            raise ValueError(f"{os.path.basename(path)}: larger than {MAX_SMALL_FILE >> 20} MiB; "
                             "not a manifest or result this program wrote")
        return b"".join(chunks)
    except BlockingIOError:
        return b""  # a FIFO or socket with nothing to read: not a manifest
    finally:
        os.close(fd)


def manifest_problems(metadata: dict, sums: dict[str, str]) -> list[str]:
    """Do ``metadata.json`` and ``SHA256SUMS`` describe the same files with the same hashes? (no I/O)"""
    problems = []
    if metadata.get("schema") != SCHEMA:
        problems.append(f"{METADATA}: 'schema' is {metadata.get('schema')!r}; expected {SCHEMA}")
    files = metadata.get("files")
    if not isinstance(files, dict):
        return problems + [f"{METADATA}: 'files' missing; expected an object file -> {{size, sha256}}"]
    for name, info in files.items():
        if not (isinstance(info, dict) and isinstance(info.get("size"), int)
                and isinstance(info.get("sha256"), str)):
            problems.append(f"{METADATA}: files[{name!r}] expected {{\"size\": int, \"sha256\": hex}}")
        elif sums.get(name) != info["sha256"]:
            problems.append(f"{SUMS} and {METADATA} disagree on {name!r}")
    for name in sums.keys() - files.keys():
        problems.append(f"{SUMS} lists {name!r} which {METADATA} does not")
    for name in REQUIRED_FILES:
        if name not in files:
            problems.append(f"required file {name!r} is not in the manifest")
    return problems + format_problems(metadata.get("packages"), files)


def format_problems(packages, files) -> list[str]:
    """Files the formats named in metadata ``packages`` require and the manifest lacks (a name this
    version does not know is not checked: an older server reads a newer tree)."""
    if not isinstance(packages, list):
        return []
    known = formats.registry()
    problems = []
    for name in packages:
        fmt = known.get(name) if isinstance(name, str) else None
        for pattern in fmt.missing(files) if fmt is not None else ():
            problems.append(f"package format {name!r}: no file matching {pattern!r} in the manifest")
    return problems


def verify_image_dir(image_dir: str | os.PathLike) -> list[str]:
    """Every problem of an image directory, [] when complete and consistent (hashes every file)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        return [f"{image_dir} is not a directory"]
    try:
        metadata = read_metadata(image_dir)
    except ValueError as e:
        return [str(e)]
    try:
        sums = parse_sums(read_bytes(str(image_dir / SUMS)).decode("utf-8"))
    except OSError as e:
        return [f"{SUMS}: cannot read: {e.strerror}"]
    except (ValueError, UnicodeDecodeError) as e:
        return [str(e)]
    problems = field_problems(metadata) + manifest_problems(metadata, sums)
    files = metadata.get("files") if isinstance(metadata.get("files"), dict) else {}
    present = set(image_files(image_dir))
    for name in sorted(present - files.keys()):
        problems.append(f"file {name!r} is in the directory but not in the manifest")
    for name, info in sorted(files.items()):
        if not isinstance(info, dict):
            continue
        p = image_dir / name
        if name not in present:
            problems.append(f"file {name!r} is in the manifest but missing")
            continue
        size = p.stat().st_size
        if size != info.get("size"):
            problems.append(f"file {name!r} is {size} bytes; the manifest says {info.get('size')}")
        elif sha256_file(p) != info.get("sha256"):
            problems.append(f"file {name!r} does not match its sha256")
    return problems


def image_path(root: str | os.PathLike, branch: str, name: str) -> Path:
    """Where an image of ``branch`` (a raw git branch name) named ``name`` lives in the tree."""
    return Path(root) / safe_branch(branch) / name


def staging_dir(root: str | os.PathLike, prefix: str = "image-") -> Path:
    """A fresh directory under ``<root>/.incoming/`` (same filesystem as the tree, so publish can rename);
    raises ``reserved.RefusedEntry`` when ``.incoming`` is not a real directory."""
    with reserved.opened(root, INCOMING, create=True) as incoming:
        made = tempfile.mkdtemp(prefix=prefix, dir=f"/proc/self/fd/{incoming}")
    return Path(root) / INCOMING / os.path.basename(made)


@contextlib.contextmanager
def held_staging(staging: str | os.PathLike) -> Iterator[Path]:
    """``staging`` as a path through its parent ``<root>/.incoming`` held open (``/proc/self/fd/N/name``)
    for as long as the block runs: the upload writes, and publish reads and renames, by path, and a root
    others may write to could swap ``.incoming`` for a symlink between a check and the write.  The parent
    is made a real directory first; raises ``reserved.RefusedEntry`` when it is a symlink or a file."""
    staging = Path(staging)
    with reserved.opened(staging.parent.parent, staging.parent.name, create=True) as incoming:
        yield Path(f"/proc/self/fd/{incoming}") / staging.name


def remove_staging(staging: str | os.PathLike) -> None:
    """Remove a staging directory that is not published, through its parent opened by descriptor; nothing
    when that parent is not a real directory (the upload and publish steps refused it, naming it)."""
    staging = Path(staging)
    with contextlib.suppress(FileNotFoundError, reserved.RefusedEntry), \
            reserved.opened(staging.parent.parent, staging.parent.name) as parent:
        if parent is not None:
            reserved.remove_entry(parent, staging.name)


def publish(staging_dir: str | os.PathLike, root: str | os.PathLike, branch: str, name: str,
            modes: Modes = WORLD_READABLE) -> Path:
    """Verify a staged image and rename it to ``<root>/<safe branch>/<name>/`` in one step.

    The image directory, its files and the branch directory get the tree's permission contract
    (``modes``) before the rename, whatever modes the upload kept, so the image is readable by the web
    server and NFS readers from the moment it appears.  Raises CorruptImage (staging directory left in
    place for inspection), ImageExists (a rebuild of the same commit gives the same name: the published
    image is kept, never replaced under a reader) or ``reserved.RefusedEntry`` (the branch directory is a
    symlink or a file: the tree's fault, not the image's; nothing is renamed).
    """
    staging = Path(staging_dir)
    problems = verify_image_dir(staging)
    if not problems:
        meta = read_metadata(staging)
        if meta.get("name") != name:
            problems.append(f"metadata name {meta.get('name')!r} differs from the publish name {name!r}")
        if meta.get("branch") != branch and safe_branch(meta.get("branch", "?")) != safe_branch(branch):
            problems.append(f"metadata branch {meta.get('branch')!r} differs from the publish branch "
                            f"{branch!r}")
    if problems:
        raise CorruptImage(staging, problems)
    target = image_path(root, branch, name)
    if os.stat(staging).st_dev != os.stat(root).st_dev:
        raise CorruptImage(staging, [f"staging directory is not on the filesystem of {root}; "
                                     f"stage under {Path(root) / INCOMING}"])
    with reserved.opened(root) as root_fd:
        # the branch directory by descriptor: one that is a symlink would take the image out of the tree
        branch_fd = reserved.open_subdir(root_fd, target.parent.name, str(target.parent))
        new_branch = branch_fd is None
        if new_branch:
            branch_fd = reserved.open_subdir(root_fd, target.parent.name, str(target.parent), create=True)
        try:
            _rename_into(staging, root, target, branch_fd, modes)
        except BaseException:
            if new_branch:  # leave the tree as it was: no empty branch directory
                with contextlib.suppress(OSError):
                    os.rmdir(target.parent.name, dir_fd=root_fd)
            raise
        finally:
            os.close(branch_fd)
    return target


def _rename_into(staging: Path, root: str | os.PathLike, target: Path, branch_fd: int, modes: Modes) -> None:
    """The last step of :func:`publish`: the modes, then one rename into the branch directory open at
    ``branch_fd``."""
    if _exists(target.name, branch_fd):
        raise ImageExists(f"{target} is already published")
    # mkdtemp makes the staging directory 0700, the worker's upload keeps its umask's modes
    problems = modes.apply_tree(staging) + modes.apply_dir(root, follow=True) + modes.apply_dir(target.parent)
    if problems:
        raise CorruptImage(staging, problems)
    try:
        # rename(2) of a directory onto an existing non-empty directory fails: no silent replacement
        os.rename(staging, target.name, dst_dir_fd=branch_fd)
    except OSError as e:
        if _exists(target.name, branch_fd):
            raise ImageExists(f"{target} is already published") from None
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full disk is not a corrupt image: the caller says so
        raise CorruptImage(staging, [f"cannot rename into {target}: {e.strerror}"]) from None


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd)
    except OSError:
        return False
    return True
