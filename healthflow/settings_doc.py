"""Rewrite the settings table in the READMEs from the declarations in ``healthflow.settings``.

Usage: ``python -m healthflow.settings_doc README.md README.fr.md`` (``make settings-doc``). The table sits
between the markers ``<!-- settings:start -->`` and ``<!-- settings:end -->``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from healthflow.settings import settings_table

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"


def markdown_table() -> str:
    lines = ["| Variable | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for variable, annotation, default, meaning in settings_table():
        cells = [
            f"`{variable}`",
            annotation.replace("|", "or"),
            f"`{default}`" if default else "",
            meaning.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rewrite(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path}: markers {START} and {END} not found; add them where the table belongs")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{markdown_table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        rewrite(Path(name))
