"""``buildbot-kernel farm-step``: boot one image on one configured machine and run one test, without a
Buildbot master (for an admin checking a new machine, or a maintainer at a desk machine).

It serves ``/machines`` (and the image root, when it exists) on the settings' ``image_port`` itself, so
run it when the master is not running, or give ``--port`` and a ``server_url`` in the machine's table.
Exposes ``register(subparsers)`` for ``buildbot_kernel.cli.COMMANDS``; also ``python -m`` runnable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.settings import SettingsError, load, locate, tree_root


class UsageError(BuildbotKernelError):
    pass


def fetch_entry(image_url: str, base_url: str = "", images_root=None) -> dict:
    """The index entry of the image at ``image_url`` (``<tree>/<branch>/<name>/``), complete or refused.
    An image under our own base URL is read from the image root on disk (this command is what serves
    it); any other is looked up in its branch's index.json, which lists complete images only."""
    from buildbot_kernel.imagetree.indexfile import IndexUnreadable, read_index
    from buildbot_kernel.imagetree.scan import IncompleteImage, load_image

    url = image_url if image_url.endswith("/") else image_url + "/"
    base = base_url.rstrip("/") + "/"
    if images_root is not None and base_url and url.startswith(base):
        local = os.path.join(os.fspath(images_root), url[len(base):])
        try:
            return load_image(os.path.normpath(local)).to_index_entry(base_url)
        except IncompleteImage as e:
            raise UsageError(f"--image: {local} is not a complete image: {e}") from None
    branch_url, _, name = url.rstrip("/").rpartition("/")
    try:
        doc = read_index(branch_url + "/index.json", timeout=30)
    except IndexUnreadable as e:
        raise UsageError(f"--image: {e}") from None
    found = next((r for r in doc.images if r.name == name), None)
    if found is None:
        raise UsageError(f"--image: {name!r} is not in {branch_url}/index.json (not a complete image there)")
    return dict(found.entry, url=url)  # the files are fetched from where the admin said the image is


def farm_site(images_root, machines):
    """The site ``farm-step`` listens with: the image tree through the embedded server's own resource and
    limits (so the same paths are refused and the same slow clients cut off), ``/machines`` mounted."""
    from buildbot_kernel.imagetree.server import make_site

    site = make_site(os.fspath(images_root))
    site.resource.putChild(b"machines", machines)
    return site


def run_step(args) -> int:
    from twisted.internet import defer, task

    from buildbot_kernel.farm.factory import make_farm
    from buildbot_kernel.imagetree.httpguard import install_body_limit

    try:
        settings = load(args.settings or locate(os.getcwd()))
    except SettingsError as e:
        raise UsageError(str(e)) from None
    images = tree_root(settings)
    entry = fetch_entry(args.image, settings.images.base_url, images)
    port = args.port or settings.server.image_port
    farm = make_farm(settings, args.state, args.workdir, base_url=settings.images.base_url)
    driver = farm.driver(args.machine)
    site = farm_site(images, farm.resource)  # a missing image root serves 404s, /machines still works
    install_body_limit(site)

    @defer.inlineCallbacks
    def main(reactor):
        listening = reactor.listenTCP(port, site, interface=settings.listener("image_bind"))
        try:
            out = yield driver.run_step(entry, args.test, args.mode, owner="farm-step")
        finally:
            farm.stop()
            yield listening.stopListening()
        print(json.dumps(out.to_json(), indent=1))
        return out

    results = []
    try:
        task.react(lambda reactor: main(reactor).addCallback(results.append))
    except SystemExit as e:  # react() always exits; 0 after success
        if e.code or not results:
            return int(e.code or 1)
    out = results[0]
    return 0 if out.verdict in ("good", "bad") else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("farm-step", help="boot one image on one test machine and run one test",
                              description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=_cli)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", help="settings file (default: $BUILDBOT_KERNEL_SETTINGS or ./settings.toml)")
    p.add_argument("--machine", required=True, help="a [[machine]] name")
    p.add_argument("--image", required=True, help="the image directory URL (…/<branch>/<name>/)")
    p.add_argument("--test", default="true", help="shell command run on the candidate (0 good, 125 skip)")
    p.add_argument("--mode", choices=("boot", "test"), default="boot")
    p.add_argument("--port", type=int, default=0, help="port to serve /machines on (default image_port)")
    p.add_argument("--state", default="farm-state.json", help="machine state file")
    p.add_argument("--workdir", default="farm", help="QEMU consoles and monitors")


def _cli(args) -> int:
    from buildbot_kernel.cli import CommandError

    try:
        return run_step(args)
    except (UsageError, KeyError, FileNotFoundError) as e:
        raise CommandError(str(e).strip("'\"")) from None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m buildbot_kernel.farm.standalone")
    add_arguments(parser)
    a = parser.parse_args()
    try:
        sys.exit(run_step(a))
    except (UsageError, KeyError, FileNotFoundError) as e:
        print(f"farm-step: error: {e}", file=sys.stderr)
        sys.exit(2)
