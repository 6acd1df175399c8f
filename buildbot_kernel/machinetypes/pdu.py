"""Power through a pdudaemon server's HTTP API (the ``pdudaemon`` type).

pdudaemon queues requests for slow PDUs and speaks every PDU's protocol; we only talk to its documented
HTTP listener: ``GET <pdu_daemon>/power/control/<on|off|reboot>?hostname=<pdu>&port=<outlet>[&delay=<s>]``,
answered 200 when the request is queued.  The request runs off the reactor thread with a time limit, and
any other answer is a :class:`~buildbot_kernel.farm.driver.PowerError` naming the URL and the reply.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from twisted.internet import threads

from buildbot_kernel.farm.driver import PowerError, ShellPower

COMMANDS = ("on", "off", "reboot")
TIMEOUT = 30.0


def problems(machine) -> list[str]:
    """The pdudaemon URL must be http(s); hostname and port go into a query string, so they are plain."""
    from buildbot_kernel.settings import http_url_problem

    out = []
    if machine.get("pdu_daemon") and http_url_problem(machine["pdu_daemon"]):
        out.append(f"pdu_daemon: {http_url_problem(machine['pdu_daemon'])}; write the pdudaemon listener's "
                   "URL, e.g. \"http://127.0.0.1:16421\"")
    for key in ("pdu_hostname", "pdu_port"):
        v = str(machine.get(key) or "")
        if v and (len(v) > 200 or any(c.isspace() or ord(c) < 32 for c in v)):
            out.append(f"{key}: {v[:40]!r} holds white space or control characters; write the name exactly as "
                       "pdudaemon's configuration has it")
    return out


class PduDaemon:
    """A small client of pdudaemon's HTTP listener (blocking: call it in a thread)."""

    def __init__(self, url: str, timeout: float = TIMEOUT):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def request_url(self, command: str, hostname: str, port: str, delay: int | None = None) -> str:
        if command not in COMMANDS:
            raise ValueError(f"pdudaemon command {command!r}: expected one of {', '.join(COMMANDS)}")
        query = {"hostname": hostname, "port": str(port)}
        if delay is not None:
            query["delay"] = str(int(delay))
        return f"{self.url}/power/control/{command}?{urllib.parse.urlencode(query)}"

    def command(self, command: str, hostname: str, port: str, delay: int | None = None) -> str:
        """Queue ``command`` for the outlet; returns pdudaemon's answer, raises PowerError on refusal."""
        url = self.request_url(command, hostname, port, delay)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                return r.read(4096).decode("utf-8", "replace").strip()
        except urllib.error.HTTPError as e:
            body = e.read(300).decode("utf-8", "replace").strip()
            raise PowerError(f"pdudaemon refused {command} of {hostname} port {port} ({url}): HTTP {e.code} "
                             f"{body}; check pdu_hostname and pdu_port against pdudaemon's configuration") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PowerError(f"cannot reach pdudaemon at {self.url}: {reason}") from None


class PduPower:
    """power_cycle = pdudaemon reboot of the outlet; soft_reboot = the admin's command if any, else the same."""

    def __init__(self, client: PduDaemon, hostname: str, port: str, delay: int, soft_reboot: str = ""):
        self.client, self.hostname, self.port, self.delay = client, hostname, str(port), delay
        self.soft = ShellPower(soft_reboot, "") if soft_reboot else None

    def power_cycle(self):
        return threads.deferToThread(self.client.command, "reboot", self.hostname, self.port, self.delay)

    def soft_reboot(self):
        return self.soft.soft_reboot() if self.soft is not None else self.power_cycle()


def make_power(setup) -> PduPower:
    m = setup.machine
    return PduPower(PduDaemon(m.pdu_daemon), m.pdu_hostname, str(m.pdu_port), m.pdu_delay,
                    m.soft_reboot)
