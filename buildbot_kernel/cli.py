"""The ``buildbot-kernel`` console script: one entry point, one module per sub-command.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets ``func``; this
file only wires them, so commands stay small and testable on their own.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command modules, in the order ``--help`` lists them
COMMANDS = [
    "buildbot_kernel.commands.run",
    "buildbot_kernel.commands.bisect",
    "buildbot_kernel.commands.index",
    "buildbot_kernel.commands.images",
    "buildbot_kernel.commands.snippets",
    "buildbot_kernel.farm.standalone",
    "buildbot_kernel.commands.machine",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildbot-kernel",
        description="Continuous kernel image builds, image tree and kexec bisection on Buildbot.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except CommandError as e:
        print(f"buildbot-kernel {args.command}: error: {e}", file=sys.stderr)
        return 2


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


if __name__ == "__main__":
    sys.exit(main())
