"""Griffe extension for the API reference: read probgen's docstring conventions.

- probgen heads its doctests ``Example:``, which griffe's Google parser renders as a plain
  admonition (the ``>>>`` lines turning into nested quotes); only ``Examples:`` becomes a
  highlighted example section, so the heading is renamed before parsing.
- probgen documents related arguments together (``mean_1, cov_1: mean and covariance``), which
  griffe reads as one unknown parameter named "mean_1, cov_1"; such an entry is repeated once
  per name, so each name is still checked against the signature.

Loaded by mkdocs.yml (``extensions: - docs/griffe_examples.py``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.MULTILINE)
_ARGS_HEADING = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args):[ \t]*$")
_GROUPED_ENTRY = re.compile(r"^(\s+)(\w+(?:,\s*\w+)+)(\s*\([^)]*\))?:(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def split_grouped_arguments(text: str) -> str:
    """Repeat each ``a, b: description`` entry of an arguments section once per name."""
    lines = text.split("\n")
    out: list[str] = []
    section_indent: int | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        heading = _ARGS_HEADING.match(line)
        if heading:
            section_indent = len(heading.group(1))
        elif line.strip() and section_indent is not None and _indent(line) <= section_indent:
            section_indent = None
        entry = _GROUPED_ENTRY.match(line) if section_indent is not None else None
        if entry is None or len(entry.group(1)) <= (section_indent or 0):
            out.append(line)
            index += 1
            continue
        body = [entry.group(4)]
        index += 1
        while index < len(lines) and (
            not lines[index].strip() or _indent(lines[index]) > len(entry.group(1))
        ):
            body.append(lines[index])
            index += 1
        while body and not body[-1].strip():
            body.pop()
            index -= 1
        for name in re.split(r",\s*", entry.group(2)):
            out.append(f"{entry.group(1)}{name}{entry.group(3) or ''}:{body[0]}")
            out.extend(body[1:])
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Apply probgen's docstring conventions before griffe parses a docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = split_grouped_arguments(value)
