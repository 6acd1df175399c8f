"""Mail addresses and messages built from hostile text (pure).

Commit subjects, author names and test names come from whoever pushed the commit or filled the form.
A newline in a header value would let them add headers (``Bcc:``) or start the body early, so every
header value goes through :func:`header_text` (control characters become spaces, bounded length) and
is encoded by :mod:`email` (RFC 2047 for non-ASCII); addresses are parsed and checked before they reach
a header or the SMTP envelope.  Text that is already an RFC 2047 encoded word (``=?utf-8?q?=0D=0A...?=``)
is the same attack one level down: :mod:`email` decodes it when the header is set and writes the CR LF
it holds, so ``=?`` never reaches a header as it is, and the finished message is checked once more.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid

# A plain addr-spec: dot-atom local part, a domain with at least one dot (no IP literals, no quoting:
# nothing a kernel developer's address needs, and nothing that can hide a second address).
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62}[A-Za-z0-9]"
ADDR_SPEC = re.compile(rf"^{_LOCAL}@{_DOMAIN}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
SUBJECT_LIMIT = 200
try:  # Python releases since mid-2024 refuse to write a header that would hold a line break
    _POLICY = email.policy.default.clone(verify_generated_headers=True)
except TypeError:
    _POLICY = email.policy.default
NAME_LIMIT = 100


def header_text(text: object, limit: int = SUBJECT_LIMIT) -> str:
    """One header-safe line: control characters (CR, LF, tab, NUL, escapes) become one space, and the
    start of an encoded word ``=?`` becomes ``= ?`` (else :mod:`email` decodes the CR LF it carries)."""
    return body_line(str(text).replace("=?", "= ?"), limit)


def body_line(text: object, limit: int = 500) -> str:
    """A value shown on one line of a mail body (a hostile subject must not forge body lines)."""
    s = " ".join(_CONTROL.sub(" ", str(text)).split())
    return s if len(s) <= limit else s[: limit - 3].rstrip() + "..."


def parse_address(text: object) -> Address | None:
    """``addr@example.org`` or ``Name <addr@example.org>`` as an :class:`Address`, or None when it is
    anything else (two addresses, a group, control characters, no domain)."""
    if not isinstance(text, str) or not text.strip() or _CONTROL.search(text):
        return None
    pairs = getaddresses([text], strict=True) if _strict_supported() else getaddresses([text])
    if len(pairs) != 1:
        return None
    name, addr = pairs[0]
    if not ADDR_SPEC.match(addr) or len(addr) > 254 or "=?" in addr:  # an encoded word: see the top
        return None
    if text.count("@") > 1 and "<" not in text:
        return None
    local, domain = addr.rsplit("@", 1)
    return Address(display_name=header_text(name, NAME_LIMIT), username=local, domain=domain)


def _strict_supported() -> bool:
    try:
        getaddresses(["a@b.c"], strict=True)
    except TypeError:
        return False
    return True


def address_problem(text: object) -> str:
    """Why ``text`` is not one mail address, or ""."""
    if parse_address(text) is None:
        return (f"{text!r} is not a mail address; write \"name@example.org\" or "
                "\"Name <name@example.org>\" (one address, no line breaks)")
    return ""


def looks_like_address(text: object) -> bool:
    return parse_address(text) is not None


@dataclass(frozen=True)
class Mail:
    """What one notification says and to whom (addresses as given; unusable ones are dropped)."""

    subject: str
    body: str
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    kind: str = ""  # build-failed, regression, culprit, flaky, bisect-result


def _unique(addresses) -> list[Address]:
    out, seen = [], set()
    for a in addresses:
        parsed = a if isinstance(a, Address) else parse_address(a)
        if parsed is None or parsed.addr_spec.lower() in seen:
            continue
        seen.add(parsed.addr_spec.lower())
        out.append(parsed)
    return out


def to_message(mail: Mail, sender: str, date: float | None = None) -> tuple[EmailMessage, list[str]]:
    """(message, envelope recipients). Recipients in To are not repeated in Cc."""
    frm = parse_address(sender)
    if frm is None:
        raise ValueError(address_problem(sender))
    to = _unique(mail.to)
    taken = {a.addr_spec.lower() for a in to}
    cc = [a for a in _unique(mail.cc) if a.addr_spec.lower() not in taken]
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = frm
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = header_text(mail.subject)
    msg["Date"] = formatdate(date, localtime=False)
    msg["Message-ID"] = make_msgid("bbk", domain=frm.domain)
    if mail.kind:
        msg["X-Buildbot-Kernel"] = header_text(mail.kind, 40)
    msg.set_content(mail.body, charset="utf-8", cte="quoted-printable")
    for name, value in msg.items():
        if _CONTROL.search(str(value)):
            raise ValueError(f"mail header {name} would hold a control character: {str(value)!r}")
    return msg, [a.addr_spec for a in (*to, *cc)]


def split_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError says what is wrong."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", text or "")
    if not m:
        raise ValueError(f"{text!r} is not host:port")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port {port} is not 1-65535")
    return host, int(port)
