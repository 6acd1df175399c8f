"""The ``buildbot-kernel`` console script: one entry point, one module per sub-command.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets ``func``; this
file only wires them, so commands stay small and testable on their own.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from buildbot_kernel.errors import BuildbotKernelError

# sub-command modules, in the order ``--help`` lists them
COMMANDS = [
    "buildbot_kernel.commands.run",
    "buildbot_kernel.commands.bisect",
    "buildbot_kernel.commands.index",
    "buildbot_kernel.commands.images",
    "buildbot_kernel.commands.snippets",
    "buildbot_kernel.commands.units",
    "buildbot_kernel.commands.paths",
    "buildbot_kernel.farm.standalone",
    "buildbot_kernel.commands.machine",
]


def version() -> str:
    """The installed distribution's version: pyproject.toml is the only place it is written."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("buildbot-kernel")
    except PackageNotFoundError:  # imported from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildbot-kernel",
        description="Continuous kernel image builds, image tree and kexec bisection on Buildbot.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    _plain_help(parser)
    return parser


def plain(text: str | None) -> str | None:
    """Docstrings are reStructuredText (``--repo``, `run`); a terminal shows help as plain text."""
    if not text:
        return text
    text = re.sub(r"``(.+?)``", r"\1", text, flags=re.S)
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"`([^`\n]+)`", r"'\1'", text)


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Every description and help text of the command tree, as plain text."""
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        action.help = plain(action.help) if action.help is not argparse.SUPPRESS else action.help
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
            for sub in set(action.choices.values()):
                _plain_help(sub)


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


class CommandError(BuildbotKernelError):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


if __name__ == "__main__":
    # run as ``python -m buildbot_kernel.cli``: the commands raise buildbot_kernel.cli.CommandError, which
    # is not this __main__ module's class, so go through the imported module
    from buildbot_kernel.cli import main as imported_main

    sys.exit(imported_main())
