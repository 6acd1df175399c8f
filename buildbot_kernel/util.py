"""Small helpers shared by the Buildbot glue."""

import ipaddress
import re


def identifier(text: str) -> str:
    """Buildbot identifiers (step and scheduler names, REST URLs) allow [A-Za-z0-9_-] only, 50 at most."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:50]


def named_service(master, name: str):
    """A service of the configuration's ``services`` list, or None.

    Buildbot keeps those under ``master.service_manager``, not in ``master.namedServices`` (which holds
    the master's own managers), so a lookup there alone never finds them.
    """
    for parent in (getattr(master, "service_manager", None), master):
        found = getattr(parent, "namedServices", {}).get(name)
        if found is not None:
            return found
    return None


def reachable_host(address: str) -> str:
    """The host part of a URL that reaches a listener on this machine: its address, loopback when it
    listens on every interface, IPv6 in brackets."""
    address = address or "127.0.0.1"
    if ipaddress.ip_address(address).is_unspecified:
        address = "127.0.0.1" if ipaddress.ip_address(address).version == 4 else "::1"
    return f"[{address}]" if ":" in address else address
