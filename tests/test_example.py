"""The committed example is the template's current rendering with the default answers."""

import subprocess
from pathlib import Path

from render_example import ROOT, render_example


def rendered_files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def example_files() -> dict[str, str]:
    """``example/`` as git sees it: what running its checks leaves (.venv, caches) is ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "example"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        name.removeprefix("example/"): (ROOT / name).read_text()
        for name in sorted(listed.split("\0"))
        if name and (ROOT / name).is_file()
    }


def test_example_is_the_current_rendering(tmp_path: Path) -> None:
    render_example(tmp_path / "example")
    committed, current = example_files(), rendered_files(tmp_path / "example")
    stale = sorted(
        name
        for name in committed.keys() | current.keys()
        if committed.get(name) != current.get(name)
    )
    assert not stale, (
        f"example/ is out of date in {stale}: run `python scripts/render_example.py` and commit"
    )
