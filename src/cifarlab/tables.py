"""Text tables as every command prints them: aligned columns, or Markdown."""

from __future__ import annotations

import re
from collections.abc import Container, Sequence


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Container[int] = (),
    rule: bool = False,
    fmt: str = "table",
) -> str:
    """Columns padded to their widest cell, two spaces apart; the columns numbered in
    ``right`` (numbers) right-aligned; ``rule`` draws dashes under the header. ``fmt``
    "markdown" gives a Markdown table of the same cells instead."""
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    lines = [line(header)] + (["  ".join("-" * w for w in widths)] if rule else [])
    return "\n".join(lines + [line(row) for row in rows])


def data_name(value: object) -> str:
    """A --data value as tables and labels show it: a path by its last part, with the
    version ``results.name_data_versions`` gives an edited one (``data@3f9a1c``)."""
    if not isinstance(value, str) or "/" not in value:
        return setting_text(value)
    path, version = split_version(value)
    return (path.rstrip("/").rpartition("/")[2] or path) + version


def split_version(name: str) -> tuple[str, str]:
    """``data/@3f9a1c`` -> (``data/``, ``@3f9a1c``), as results names the versions of an
    edited dataset, model file or registered net; (name, "") for a name without one."""
    base, version = re.fullmatch(r"(.*?)(@[0-9a-f]{6})?", name, re.DOTALL).groups()
    return base, version or ""


def and_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def setting_text(value: object) -> str:
    """A setting's value as the command line types it: milestones (3, 6) read ``3,6``; unset
    reads ``-``."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    return str(value)
