"""The committed example is the template's current rendering with the default answers."""

from pathlib import Path

from render_example import ROOT, render_example


def files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".mypy_cache" not in path.parts
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
        f"example/ is out of date in {stale}: run `python hooks/render_example.py` and commit"
    )
