"""Small helpers shared by the Buildbot glue."""

import ipaddress
import re


def identifier(text: str) -> str:
    """Buildbot identifiers (step and scheduler names, REST URLs) allow [A-Za-z0-9_-] only, 50 at most."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:50]


def reachable_host(address: str) -> str:
    """The host part of a URL that reaches a listener on this machine: its address, loopback when it
    listens on every interface, IPv6 in brackets."""
    address = address or "127.0.0.1"
    if ipaddress.ip_address(address).is_unspecified:
        address = "127.0.0.1" if ipaddress.ip_address(address).version == 4 else "::1"
    return f"[{address}]" if ":" in address else address


def shown(value, limit: int = 40) -> str:
    """A value from outside as a message quotes it: whole when short, else its start and its length.  The
    messages become step summaries every reader of builds loads, so a huge value is never repeated."""
    text = str(value)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
