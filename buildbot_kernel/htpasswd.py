"""The web UI's accounts: an Apache htpasswd file whose every hash is bcrypt (``htpasswd -B``).

Buildbot's own ``HTPasswdAuth`` hands the file to Twisted's ``FilePasswordDB`` without a hash function,
which compares the typed password with the stored text as it is: a bcrypt file then accepts the hash
itself as the password, and a plain-text file stores passwords in clear.  So the file is read here, only
bcrypt lines count, and a password is accepted only when ``bcrypt.checkpw`` says so.  A line with any
other hash (MD5 ``$apr1$``, SHA ``{SHA}``, crypt, plain text) is reported by checkconfig and never
accepted at login (README.md, "Putting it on a lab network").
"""

from __future__ import annotations

import bcrypt

BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
BCRYPT_MAX_BYTES = 72
# Buildbot names a build's owner "anonymous" when nobody is logged in (and then takes the owner from the
# form); an account of that name would blur who owns a build
RESERVED_USERS = frozenset({"anonymous"})
# checked when the file has no account at all (an unknown name otherwise costs a check at the file's own
# cost, see check_password)
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(4))


def parse(text: str) -> tuple[dict[str, bytes], list[str]]:
    """(user -> bcrypt hash, problems): each problem names the line and the user, never the hash."""
    users: dict[str, bytes] = {}
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, digest = line.partition(":")
        if not sep or not user:
            problems.append(f"line {n}: expected 'user:hash'")
            continue
        if user in RESERVED_USERS:
            problems.append(f"line {n}: {user!r} is reserved for users who are not logged in; use another name")
            continue
        if not digest.startswith(BCRYPT_PREFIXES):
            problems.append(f"line {n} (user {user!r}): not a bcrypt hash; set the password again with "
                            f"`htpasswd -B <file> {user}`")
            continue
        if user in users:
            problems.append(f"line {n}: user {user!r} is listed twice")
            continue
        users[user] = digest.encode()
    return users, problems


def check_password(users: dict[str, bytes], user: str, password: bytes) -> bool:
    """True only for a bcrypt match.  An unknown user costs a check against the costliest hash of the
    file, so a login answers as slowly for a name without an account as for a wrong password: the time
    does not tell which names have accounts."""
    known = user in users
    digest = users[user] if known else max(users.values(), key=_cost, default=_DUMMY_HASH)
    try:
        # bcrypt uses the first 72 bytes; `htpasswd -B` hashes a longer password that way too
        ok = bcrypt.checkpw(password[:BCRYPT_MAX_BYTES], digest)
    except ValueError:  # a malformed hash, or a password bcrypt refuses (NUL bytes)
        return False
    return ok and known


def _cost(digest: bytes) -> int:
    """The bcrypt cost of ``$2y$NN$...`` (0 when unreadable)."""
    field = digest[4:6]
    return int(field) if field.isdigit() else 0


def check_file(path: str, user: str, password: bytes) -> bool:
    """Read the file at every login, so adding or removing an account needs no restart; a file that
    cannot be read accepts nobody."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return False
    users, _ = parse(text)
    return check_password(users, user, password)
