"""Render the template with its default answers into ``example/``, for review.

The committed rendering shows, in every change's diff, what that change does to the
generated project: the module users will merge on ``copier update``. Run it from the
repository root after changing ``template/`` or ``copier.yml``; ``tests/test_example.py``
fails while ``example/`` is out of date.

Usage: ``python scripts/render_example.py [DESTINATION]`` (default ``example``).
"""

import shutil
import sys
import tempfile
from pathlib import Path

import copier

ROOT = Path(__file__).resolve().parent.parent
# The answers file records where and from which commit it was rendered: noise for review.
LEFT_OUT = (".copier-answers.yml",)
# Files of the template repository that are not part of the template, nor needed to render it.
NOT_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".*_cache", ".hypothesis", "example", "my-service"
)


def render_example(destination: Path) -> None:
    """Replace ``destination`` with a rendering of the working tree's template."""
    with tempfile.TemporaryDirectory() as scratch:
        # A plain copy: Copier renders it as it is, uncommitted changes included.
        snapshot = Path(scratch) / "template"
        shutil.copytree(ROOT, snapshot, ignore=NOT_TEMPLATE)
        rendered = Path(scratch) / "rendered"
        copier.run_copy(str(snapshot), rendered, defaults=True, quiet=True)
        for name in LEFT_OUT:
            (rendered / name).unlink()
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(rendered, destination)


if __name__ == "__main__":
    render_example(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "example")
