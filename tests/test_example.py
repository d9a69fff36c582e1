"""The committed example is the template's current rendering with the default answers."""

from pathlib import Path

from render_example import ROOT, render_example

# What running the example's own checks leaves behind, which git ignores too.
LEFT_BY_TOOLS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}


def files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not LEFT_BY_TOOLS & set(path.parts)
    }


def test_example_is_the_current_rendering(tmp_path: Path) -> None:
    render_example(tmp_path / "example")
    committed, current = files(ROOT / "example"), files(tmp_path / "example")
    stale = sorted(
        name
        for name in committed.keys() | current.keys()
        if committed.get(name) != current.get(name)
    )
    assert not stale, (
        f"example/ is out of date in {stale}: run `python scripts/render_example.py` and commit"
    )
