"""Migration to 0.2.0: rename the DB_* settings to DATABASE_* in a project's ``.env``.

0.2.0 renamed DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_TIMEOUT, DB_POOL_RECYCLE and DB_ECHO to
DATABASE_*. The template never renders ``.env`` (it holds the user's values), so no diff of
``copier update`` reaches it; Copier runs this script after an update that crosses 0.2.0.

Usage: ``python rename_database_settings.py [FILE ...]`` (default ``.env``, relative to the
project Copier runs it in). Only assignments are renamed (``NAME=value``, also with
``export`` or spaces around ``=``); values, comments, blank lines and every other variable
stay as they are, line endings included. A name whose DATABASE_* form the file already
assigns is left alone, so running the script twice changes nothing, and a missing file is
not an error.
"""

import re
import sys
from collections.abc import Sequence
from pathlib import Path

RENAMED = {
    f"DB_{name}": f"DATABASE_{name}"
    for name in ("POOL_SIZE", "MAX_OVERFLOW", "POOL_TIMEOUT", "POOL_RECYCLE", "ECHO")
}
_ASSIGNMENT = re.compile(
    r"^(?P<lead>[ \t]*(?:export[ \t]+)?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?=[ \t]*=)"
)


def rename_settings(text: str) -> tuple[str, list[str]]:
    """Return ``text`` with the old names renamed, and the names that were renamed."""
    lines = text.splitlines(keepends=True)
    assigned = {match["name"] for line in lines if (match := _ASSIGNMENT.match(line))}
    renamed: list[str] = []
    for number, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        if match is None or match["name"] not in RENAMED:
            continue
        new_name = RENAMED[match["name"]]
        # The new name is already set (by hand, or by an earlier run): renaming the old one
        # too would leave two assignments and make the value depend on their order.
        if new_name in assigned:
            continue
        lines[number] = match["lead"] + new_name + line[match.end() :]
        renamed.append(match["name"])
    return "".join(lines), renamed


def migrate(path: Path) -> list[str]:
    """Rename the old settings in the file at ``path``, if it exists; return what changed."""
    if not path.is_file():
        return []
    # newline="" keeps CRLF line endings as they are, on reading and on writing.
    with path.open(encoding="utf-8", newline="") as file:
        text = file.read()
    migrated, renamed = rename_settings(text)
    if renamed:
        with path.open("w", encoding="utf-8", newline="") as file:
            file.write(migrated)
    return renamed


def main(arguments: Sequence[str]) -> int:
    """Migrate each file named in ``arguments`` (default ``.env``) and say what changed."""
    for name in arguments or [".env"]:
        for old_name in migrate(Path(name)):
            print(f"{name}: renamed {old_name} to {RENAMED[old_name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
