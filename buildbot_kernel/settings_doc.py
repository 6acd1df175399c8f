"""The key reference of docs/settings.md, generated from the settings schema so it cannot drift from it.

``python -m buildbot_kernel.settings_doc docs/settings.md`` rewrites the block between the two markers
below; tests/unit/test_settings_types.py fails while the file's block differs from :func:`reference`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from buildbot_kernel import settings

BEGIN = "<!-- BEGIN generated from buildbot_kernel/settings.py: python -m buildbot_kernel.settings_doc -->"
END = "<!-- END generated -->"
_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list of strings"}


def _toml(value) -> str:
    """A default as it would be written in the settings file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "" else f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(title: str, schema: dict[str, settings.Key], record: type) -> list[str]:
    lines = [f"### `{title}`", "", f"Read as `settings.{record.__name__}`.", "",
             "| key | type | default | expected |", "|---|---|---|---|"]
    for key, spec in schema.items():
        attr = settings.field_name(key)
        name = f"`{key}`" + (f" (attribute `{attr}`)" if attr != key else "")
        types = [t for t in spec.types if not (t is int and float in spec.types)]  # a float key takes 1 too
        kind = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        default = "required" if spec.default is settings.REQUIRED else f"`{_toml(spec.default)}`"
        lines.append(f"| {name} | {kind} | {_cell(default)} | {_cell(spec.expect)} |")
    return lines + [""]


def reference() -> str:
    """The generated block, markers included."""
    lines = [BEGIN, ""]
    for name, schema in settings.SECTIONS.items():
        lines += _section(f"[{name}]", schema, settings.RECORDS[name])
    for name, schema in settings.OPTIONAL_SECTIONS.items():
        lines += _section(f"[{name}]", schema, settings.RECORDS[name])
    for name, schema in settings.TABLES.items():
        lines += _section(f"[[{name}]]", schema, settings.RECORDS[name])
    return "\n".join(lines + [END])


def update(text: str) -> str:
    """``text`` with its generated block replaced by the current one."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no generated block: the file needs the lines {BEGIN!r} and {END!r}")
    return text[:start] + reference() + text[end + len(END):]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m buildbot_kernel.settings_doc docs/settings.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
