"""The scripts in hooks/ that `copier update` runs: small, idempotent, and careful with .env."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from projects import ROOT
from rename_database_settings import RENAMED, migrate, rename_settings

RENAME_SCRIPT = ROOT / "hooks" / "rename_database_settings.py"

OLD_ENV = """\
# Production-like settings for local runs.
DATABASE_URL=postgresql+asyncpg://app:s3cret=x@db:5432/app
DB_POOL_SIZE=20

# DB_ECHO=true is too noisy; keep it off.
DB_ECHO=false
export DB_POOL_TIMEOUT = 2.5
DB_MAX_OVERFLOW="5"
DB_POOL_RECYCLE=600
CREATE_TABLES=false
MY_DB_POOL_SIZE=3
DB_POOL_SIZE_LIMIT=7
"""

# What the migration makes of it, line by line: these lines renamed, every other kept as is
# (the comment that names DB_ECHO, and the names that only contain DB_POOL_SIZE).
EXPECTED_LINES = {
    "DB_POOL_SIZE=20": "DATABASE_POOL_SIZE=20",
    "DB_ECHO=false": "DATABASE_ECHO=false",
    "export DB_POOL_TIMEOUT = 2.5": "export DATABASE_POOL_TIMEOUT = 2.5",
    'DB_MAX_OVERFLOW="5"': 'DATABASE_MAX_OVERFLOW="5"',
    "DB_POOL_RECYCLE=600": "DATABASE_POOL_RECYCLE=600",
}
NEW_ENV = "".join(f"{EXPECTED_LINES.get(line, line)}\n" for line in OLD_ENV.splitlines())


def run_script(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the script the way Copier's migration does: in the project, by this Python."""
    return subprocess.run(
        [sys.executable, str(RENAME_SCRIPT), *arguments],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_old_setting_is_renamed_keeping_values_comments_and_other_lines() -> None:
    migrated, renamed = rename_settings(OLD_ENV)
    assert migrated == NEW_ENV, migrated
    assert sorted(renamed) == sorted(RENAMED)


def test_renaming_twice_changes_nothing_the_second_time() -> None:
    once, _ = rename_settings(OLD_ENV)
    assert rename_settings(once) == (once, [])


def test_a_file_without_old_settings_is_left_as_it_is() -> None:
    text = "DATABASE_URL=sqlite+aiosqlite:///./app.db\n# DB_POOL_SIZE is gone\nDEBUG=1"
    assert rename_settings(text) == (text, [])


def test_an_old_name_whose_new_name_is_already_set_stays_to_avoid_two_values() -> None:
    text = "DB_POOL_SIZE=5\nDATABASE_POOL_SIZE=20\nDB_ECHO=true\n"
    migrated, renamed = rename_settings(text)
    assert migrated == "DB_POOL_SIZE=5\nDATABASE_POOL_SIZE=20\nDATABASE_ECHO=true\n", migrated
    assert renamed == ["DB_ECHO"]


def test_windows_line_endings_and_a_missing_final_newline_are_kept(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"# local\r\nDB_POOL_SIZE=20\r\nDB_ECHO=true")
    assert migrate(env) == ["DB_POOL_SIZE", "DB_ECHO"]
    assert env.read_bytes() == b"# local\r\nDATABASE_POOL_SIZE=20\r\nDATABASE_ECHO=true"


def test_the_script_renames_in_the_projects_env_and_says_what_it_did(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(OLD_ENV)
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / ".env").read_text() == NEW_ENV
    assert ".env: renamed DB_POOL_SIZE to DATABASE_POOL_SIZE\n" in result.stdout


def test_the_script_run_twice_leaves_the_file_as_the_first_run_did(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(OLD_ENV)
    first = run_script(tmp_path, ".env")
    second = run_script(tmp_path, ".env")
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert (tmp_path / ".env").read_text() == NEW_ENV
    assert second.stdout == "", second.stdout


@pytest.mark.parametrize("arguments", [(), (".env",)], ids=["default", "named"])
def test_the_script_does_nothing_without_an_env_file(
    tmp_path: Path, arguments: tuple[str, ...]
) -> None:
    result = run_script(tmp_path, *arguments)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert list(tmp_path.iterdir()) == []


# --- merge_revision_heads.py ------------------------------------------------------------------

MERGE_SCRIPT = ROOT / "hooks" / "merge_revision_heads.py"
REVISION = '''"""{message}"""

from collections.abc import Sequence

revision: str = "{revision}"
down_revision: str | None = {down}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
'''


def write_revision(versions: Path, revision: str, down: str | None) -> None:
    parent = "None" if down is None else f'"{down}"'
    text = REVISION.format(message=revision, revision=revision, down=parent)
    (versions / f"{revision}.py").write_text(text)


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    """migrations/versions of a project at 0.4.0's revisions, the example's included."""
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    write_revision(versions, "0001", None)
    write_revision(versions, "0002", "0001")
    return versions


def run_merge(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MERGE_SCRIPT), "migrations/versions"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )


def test_one_head_is_left_as_it_is(versions: Path) -> None:
    write_revision(versions, "0003_owner_subject", "0002")
    result = run_merge(versions.parent.parent)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(list(versions.iterdir())) == 3


def test_the_templates_revision_and_yours_after_the_same_one_are_joined_once(
    versions: Path,
) -> None:
    write_revision(versions, "0003", "0002")  # yours, numbered on 0.4.0
    write_revision(versions, "0003_owner_subject", "0002")  # the template's, from 0.5.0
    project = versions.parent.parent
    first, second = run_merge(project), run_merge(project)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "0004_merge_heads.py: joins the template's revisions and yours" in first.stdout
    assert second.stdout == "", "a second run wrote another merge"
    merge = (versions / "0004_merge_heads.py").read_text()
    assert 'revision: str = "0004"\n' in merge, merge
    assert 'down_revision: str | Sequence[str] | None = ("0003", "0003_owner_subject")' in merge
    assert "followed 0002." in merge, merge
    # As the project's CI checks it.
    for check in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                *check,
                "--isolated",
                "--line-length",
                "100",
                str(versions),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_without_revisions_nothing_is_done(tmp_path: Path) -> None:
    result = run_merge(tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_templates_revisions_after_0002_take_their_file_name_as_id() -> None:
    # A bare number could be an id a project gave a revision of its own before updating.
    versions = ROOT / "template" / "migrations" / "versions"
    for path in versions.iterdir():
        name = re.sub(r"\{%.*?%\}", "", path.name).removesuffix(".jinja").removesuffix(".py")
        found = re.search(r'^revision: str = "([^"]+)"$', path.read_text(), re.M)
        assert found, f"{path.name} declares no revision id"
        expected = name[:4] if name[:4] in {"0001", "0002"} else name
        assert found.group(1) == expected, f"{path.name}: want the id {expected!r}"
        assert len(expected) <= 32, f"{path.name}: alembic_version holds 32 characters"
