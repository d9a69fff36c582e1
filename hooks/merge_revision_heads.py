"""Migration to 0.5.0 and later: join the template's new revisions to a project's own.

Since 0.5.0 the template's revisions carry their name in their id (``0003_owner_subject``),
so they never take the id of a revision a project numbered itself (``0003``). When both
continue from the same revision, though, the project has two heads, and ``alembic upgrade
head`` refuses to choose. After each update Copier runs this script in the project: it finds
the heads among the revision files and, if there are several, writes one revision that has
them all as parents and changes nothing itself, numbered after the last, as
``migrations/env.py`` numbers revisions. ``alembic upgrade head`` then applies each branch,
whichever a database has already.

Usage: ``python merge_revision_heads.py [DIRECTORY]`` (default ``migrations/versions``,
relative to the project). The files are read as text, since Copier's Python need not have
Alembic. With one head, or no such directory, nothing changes, so running it twice writes
one merge.
"""

import ast
import sys
from collections.abc import Sequence
from pathlib import Path

MERGE = '''"""Join the revisions {listed}, which continued from the same one.

Written after `copier update`: the template's revisions and this project's own both
followed {common}. Applying this one applies each of them, whichever a database has.

Revision ID: {revision}
Revises: {revises}
"""

from collections.abc import Sequence

revision: str = "{revision}"
down_revision: str | Sequence[str] | None = ({parents})
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to apply: the revisions this one joins hold the changes."""


def downgrade() -> None:
    """Nothing to undo."""
'''


def _assigned(tree: ast.Module, name: str) -> object:
    # The value of a module-level ``name = ...`` or ``name: ... = ...`` that is a literal.
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            first = node.targets[0]
            target, value = (first.id if isinstance(first, ast.Name) else ""), node.value
        else:
            continue
        if target == name and value is not None:
            return ast.literal_eval(value)
    return None


def revisions(versions: Path) -> dict[str, tuple[str, ...]]:
    """Each revision's id in ``versions``, with the ids of its parents."""
    found: dict[str, tuple[str, ...]] = {}
    for path in sorted(versions.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        revision = _assigned(tree, "revision")
        if not isinstance(revision, str):
            continue
        down = _assigned(tree, "down_revision")
        if isinstance(down, str):
            found[revision] = (down,)
        elif isinstance(down, tuple | list):
            found[revision] = tuple(str(parent) for parent in down)
        else:
            found[revision] = ()
    return found


def heads(found: dict[str, tuple[str, ...]]) -> list[str]:
    """The revisions no other revision continues from."""
    continued = {parent for parents in found.values() for parent in parents}
    return sorted(revision for revision in found if revision not in continued)


def ancestors(found: dict[str, tuple[str, ...]], revision: str) -> set[str]:
    """``revision`` and every revision it continues from."""
    seen, stack = set(), [revision]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(found.get(current, ()))
    return seen


def merge(versions: Path) -> Path | None:
    """Write the merge of the heads in ``versions`` if there are several; its path."""
    if not versions.is_dir():
        return None
    found = revisions(versions)
    joined = heads(found)
    if len(joined) < 2:
        return None
    numbers = [int(revision[:4]) for revision in found if revision[:4].isdigit()]
    number = f"{max(numbers, default=0) + 1:04d}"
    shared = set.intersection(*(ancestors(found, head) for head in joined))
    common = max(shared, key=lambda revision: len(ancestors(found, revision)), default=None)
    source = MERGE.format(
        listed=" and ".join(joined),
        common=common or "nothing",
        revision=number,
        revises=", ".join(joined),
        parents=", ".join(f'"{head}"' for head in joined),
    )
    path = versions / f"{number}_merge_heads.py"
    path.write_text(source, encoding="utf-8")
    return path


def main(arguments: Sequence[str]) -> int:
    """Merge the heads of the revisions in ``arguments[0]`` and say what was written."""
    written = merge(Path(arguments[0] if arguments else "migrations/versions"))
    if written is not None:
        print(f"{written}: joins the template's revisions and yours; apply it with the rest")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
