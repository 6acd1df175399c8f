"""Machine keys: the secret every ``/machines/<name>/...`` request must carry (README "Machine keys").

A lab network is shared: anyone on it can reach the image port.  Without a per-machine secret a third
party could fetch a machine's boot instructions (and its live step token) or decide a bisect step with a
forged report.  The key is read from ``key_file`` (made by the admin) or, for a ``qemu`` machine without
one, generated once under the master's state directory.  Stage 1 gets it on its kernel command line as
``bbk.key=...`` and passes it on to every candidate it kexecs, so stage 2 sends it too.

A key is printable ASCII without spaces (it travels on a kernel command line and in an HTTP header) and
long enough not to be guessed; comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from buildbot_kernel.errors import BuildbotKernelError

MIN_KEY_CHARS = 16
MAX_KEY_CHARS = 256
_KEY_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space: one kernel command-line word
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyFileError(BuildbotKernelError, ValueError):
    """A key file that cannot be used; the message names the file and says how to make a good one."""


def how_to_make(path: str | os.PathLike) -> str:
    return f"create it with: head -c 32 /dev/urandom | base64 > {path}; chmod 600 {path}"


def check_key(text: str, where: str) -> str:
    """The key in ``text`` (surrounding whitespace dropped), or KeyFileError saying what is wrong."""
    key = text.strip()
    if not key:
        raise KeyFileError(f"{where} is empty")
    if not _KEY_CHARS.fullmatch(key):
        raise KeyFileError(f"{where}: the key must be one word of printable ASCII (it goes on the kernel "
                           "command line as bbk.key=... and into an HTTP header)")
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS:
        raise KeyFileError(f"{where}: the key has {len(key)} characters; expected {MIN_KEY_CHARS} to "
                           f"{MAX_KEY_CHARS}")
    return key


def read_key(path: str | os.PathLike) -> str:
    """The key in ``path``; refuses a missing, unreadable, world-readable or malformed file."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {p} is not a regular file; {how_to_make(p)}")
        if st.st_mode & stat.S_IROTH:
            raise KeyFileError(f"key file {p} is readable by every user; run: chmod 600 {p}")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {p} does not exist; {how_to_make(p)}") from None
    except PermissionError:
        raise KeyFileError(f"key file {p} cannot be read by the master's user; check its owner") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {p} is not ASCII; {how_to_make(p)}") from None
    return check_key(text, f"key file {p}")


def plain_name(name: object) -> bool:
    """A machine name that is one word on a kernel command line (``bbk.machine=``), one URL path segment
    and one file name as it is: letters, digits, ``.``, ``_`` and ``-``, at most 64."""
    return isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name))


def key_file_name(machine: str) -> str:
    """A file name for a machine's generated key that is one safe path component whatever the name."""
    if plain_name(machine):
        return f"{machine}.key"
    return "machine-" + hashlib.sha256(machine.encode()).hexdigest()[:24] + ".key"


def generated_key(directory: str | os.PathLike, machine: str) -> str:
    """The machine's key under ``directory`` (mode 0600), made on first use and kept across restarts."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / key_file_name(machine)
    key = base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key(path)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key.strip()


def shared_keys(keys: dict[str, str]) -> list[tuple[str, str]]:
    """(first machine, later machine) for every machine whose key an earlier one already has.

    A key is what proves which machine a request speaks for: two machines with one key could each fetch
    the other's instructions and decide the other's steps (README "Machine keys": one key per machine)."""
    owner: dict[str, str] = {}
    pairs = []
    for name, key in keys.items():
        first = owner.setdefault(key, name)
        if first != name:
            pairs.append((first, name))
    return pairs


def shared_key_problem(first: str, second: str) -> str:
    """The message for two machines with one key: both named, and how to give the second one its own."""
    example = "keys/" + key_file_name(second)
    return (f"machines {first!r} and {second!r} have the same key, so each could act as the other (fetch its "
            f"instructions, decide its steps); give {second!r} a key of its own: {how_to_make(example)}, then "
            f"set its key_file = \"{example}\"")


def key_matches(expected: str, presented: str | bytes | None) -> bool:
    """Constant-time comparison; no key configured or none presented never matches."""
    if not expected or not presented:
        return False
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "replace")
    return hmac.compare_digest(expected.encode(), presented)
