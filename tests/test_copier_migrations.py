"""The scripts in hooks/ that `copier update` runs: small, idempotent, and careful with .env."""

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
