"""`copier update` from the last release to the working tree keeps what the user wrote.

The tests build a throwaway git repository of the template: the "Release 0.1.0" commit tagged
v0.1.0, then the working tree (uncommitted changes included) tagged with the newest version
in CHANGELOG.md. They render a project from v0.1.0, commit it, edit it as a user would, and
update it with the command the README gives, to the newest tag.
"""

import asyncio
import difflib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import yaml
from packaging.version import Version
from projects import CHECKS, ROOT, SUITE, copy_of, edit, new_postgres_database, render, run

# The releases updates start from, oldest first; most tests start from the oldest. A release
# commit is found by its tag or, in a clone without tags, by the subject of its commit.
RELEASES = ("0.1.0", "0.2.0", "0.3.0", "0.4.0")
FROM_VERSION = RELEASES[0]
UPDATE_COMMAND = ["copier", "update", "--defaults", "--trust"]
# Throwaway repositories get an identity of their own, whatever git config the machine has.
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
}

# --- What a user adds to a project generated from 0.1.0 (module my_service) ---------------

# A model that belongs to an Item, at the end of the Models section.
USER_MODELS = '''

class ReviewBase(SQLModel):
    stars: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=2000)


class Review(ReviewBase, table=True):
    """What someone thought of an item."""

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True, ondelete="CASCADE")
    item: Item = Relationship(sa_relationship_kwargs={"lazy": "raise"})


class ReviewCreate(ReviewBase):
    """The body of ``POST /items/{item_id}/reviews``."""


class ReviewRead(ReviewBase):
    """A review as the API returns it."""

    id: int
    item_id: int
'''

# Routes with their budgets, at the end of the Routes section.
USER_ROUTES = '''

@router.post("/items/{item_id}/reviews", status_code=status.HTTP_201_CREATED)
@query_budget(2)
async def create_review(item_id: int, body: ReviewCreate, session: SessionDep) -> ReviewRead:
    """Review an existing item."""
    if await session.get(Item, item_id) is None:
        raise _not_found("item", item_id)
    review = Review.model_validate(body, update={"item_id": item_id})
    session.add(review)
    await session.commit()
    return ReviewRead.model_validate(review)


@router.get("/items/{item_id}/reviews")
@query_budget(1)
async def list_reviews(item_id: int, session: SessionDep) -> list[ReviewRead]:
    """An item's reviews, oldest first."""
    reviews = await session.exec(
        select(Review).where(Review.item_id == item_id).order_by(col(Review.id))
    )
    return [ReviewRead.model_validate(review) for review in reviews]
'''

USER_TESTS = '''\
"""Reviews of items, with the exact queries each route sends."""

import httpx

from my_service import expect_queries


async def create_item(client: httpx.AsyncClient) -> int:
    owner = (await client.post("/owners", json={"name": "Ada"})).json()
    body = {"name": "Lamp", "price_cents": 1999, "owner_id": owner["id"], "tag_ids": []}
    response = await client.post("/items", json=body)
    assert response.status_code == 201, response.text
    item_id: int = response.json()["id"]
    return item_id


async def test_create_review_reads_the_item_then_inserts(client: httpx.AsyncClient) -> None:
    item_id = await create_item(client)
    with expect_queries(2):
        response = await client.post(f"/items/{item_id}/reviews", json={"stars": 5})
    assert response.status_code == 201, response.text
    assert response.json() == {"id": 1, "item_id": item_id, "stars": 5, "comment": ""}


async def test_reviewing_a_missing_item_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/items/99/reviews", json={"stars": 5})
    assert response.status_code == 404, response.text


async def test_list_reviews_runs_one_query(client: httpx.AsyncClient) -> None:
    item_id = await create_item(client)
    for stars in (4, 5):
        await client.post(f"/items/{item_id}/reviews", json={"stars": stars})
    with expect_queries(1):
        response = await client.get(f"/items/{item_id}/reviews")
    assert [review["stars"] for review in response.json()] == [4, 5]
'''

# What the CHANGELOG asks of the user's own code once updated, as the new generated checks
# point out: the input types and key pattern, and the 404 listed in OpenAPI (0.3.0), a body
# schema that refuses unknown fields (0.5.0).
USER_FOLLOW_UP = [
    ("class ReviewCreate(ReviewBase):\n", "class ReviewCreate(ReviewBase, InputSchema):\n"),
    (
        '    comment: str = Field(default="", max_length=2000)\n',
        '    comment: PlainText = Field(default="", max_length=2000)\n',
    ),
    (
        "    id: int | None = Field(default=None, primary_key=True)\n"
        '    item_id: int = Field(foreign_key="item.id", index=True, ondelete="CASCADE")\n',
        '    __table_args__ = {"sqlite_autoincrement": True}\n\n'
        "    id: int | None = Field(default=None, sa_column=key_column())\n"
        '    item_id: int = Field(foreign_key="item.id", index=True, ondelete="CASCADE", '
        "sa_type=BigKey)\n",
    ),
    (
        '@router.post("/items/{item_id}/reviews", status_code=status.HTTP_201_CREATED)\n',
        '@router.post(\n    "/items/{item_id}/reviews",\n    status_code=status.HTTP_201_CREATED,\n'
        "    responses=error_responses(404),\n)\n",
    ),
    ("async def create_review(item_id: int,", "async def create_review(item_id: Id,"),
    ("async def list_reviews(item_id: int,", "async def list_reviews(item_id: Id,"),
    # 0.5.0: who may call each route, beside its budget.
    (
        "@query_budget(2)\nasync def create_review(",
        '@query_budget(2)\n@access("reviews:write")\nasync def create_review(',
    ),
    (
        "@query_budget(1)\nasync def list_reviews(",
        "@query_budget(1)\n@access(PUBLIC)\nasync def list_reviews(",
    ),
]

# A tuning default changed in place: the list routes' page size ceiling.
TEMPLATE_PAGE_SIZE = "MAX_PAGE_SIZE = 100\n"
USER_PAGE_SIZE = "MAX_PAGE_SIZE = 200\n"

# The user's .env (not in git, as the generated .gitignore says), written for 0.1.0.
USER_ENV = """\
# Local settings; the deployment sets its own.
DATABASE_URL=sqlite+aiosqlite:///./reviews.db
DB_POOL_SIZE=20
SENTRY_DSN=https://key@example.com/1
"""
MIGRATED_ENV = USER_ENV.replace("DB_POOL_SIZE=20", "DATABASE_POOL_SIZE=20")

# A setting default changed in place, on a line the newer template renamed.
TEMPLATE_POOL_SIZE = "    db_pool_size: int = Field(default=10, ge=1)\n"
USER_POOL_SIZE = "    db_pool_size: int = Field(default=20, ge=1)\n"
# The release that renamed that setting.
COLLIDING_RELEASE = "0.2.0"


# --- Helpers ---------------------------------------------------------------------------------


def git(*arguments: str, cwd: Path) -> str:
    """Run git in ``cwd``, failing the test with git's own message if it fails."""
    result = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *arguments],
        cwd=cwd,
        env={**os.environ, **_GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"git {' '.join(arguments)} in {cwd}:\n{result.stderr}"
    return result.stdout


def newest_version() -> str:
    """The version of the newest entry in CHANGELOG.md: what the working tree is becoming."""
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings, "CHANGELOG.md has no '## X.Y.Z' headings"
    return str(max(Version(heading) for heading in headings))


def release_commit(version: str) -> str:
    """The commit of release ``version`` in the template's own repository."""
    tagged = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/tags/v{version}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if tagged.returncode == 0:
        return tagged.stdout.strip()
    subject = f"^Release {re.escape(version)}$"
    found = git("log", "--format=%H", "--extended-regexp", f"--grep={subject}", cwd=ROOT).split()
    assert len(found) == 1, (
        f"want one commit 'Release {version}' in the history, found {found} "
        "(in a shallow clone, fetch the whole history: git fetch --unshallow)"
    )
    return found[0]


def make_user_edits(project: Path) -> None:
    """A model, routes with budgets and their test, a changed default; committed, plus .env."""
    module = project / "my_service.py"
    edit(module, "\n\n# --- Routes", USER_MODELS + "\n\n# --- Routes")
    edit(module, "\n\n\n# --- App ---", "\n" + USER_ROUTES + "\n\n# --- App ---")
    edit(module, TEMPLATE_PAGE_SIZE, USER_PAGE_SIZE)
    (project / "tests" / "test_reviews.py").write_text(USER_TESTS)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", "Review items", cwd=project)
    (project / ".env").write_text(USER_ENV)


def generate(template_repository: Path, destination: Path, version: str = FROM_VERSION) -> Path:
    """A project rendered from an old release and committed, as `copier copy` users do."""
    project = render(template_repository, destination, vcs_ref=f"v{version}")
    git("init", "--quiet", "--initial-branch=main", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", f"Generate from sqlmodel-starter {version}", cwd=project)
    return project


def conflict_leftovers(project: Path) -> list[str]:
    """Conflict markers and .rej files anywhere in ``project``, as file:line."""
    found = []
    for path in sorted(project.rglob("*")):
        parts = path.relative_to(project).parts
        if {".git", ".venv", "__pycache__"} & set(parts) or not path.is_file():
            continue
        where = "/".join(parts)
        if path.suffix == ".rej":
            found.append(f"{where}: a rejected hunk")
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if line.startswith((b"<<<<<<<", b">>>>>>>")):
                found.append(f"{where}:{number}: {line.decode(errors='replace')}")
    return found


def unmerged_paths(project: Path) -> list[str]:
    """The files git records as conflicted (what `git status` lists as "both modified")."""
    return git("diff", "--name-only", "--diff-filter=U", cwd=project).split()


def recorded_commit(project: Path) -> str:
    """The template version `.copier-answers.yml` says the project is at."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return str(answers["_commit"])


@dataclass(frozen=True)
class Update:
    """A project after `copier update`, and what the command printed; ``earlier``, the
    updates to the releases in between, each committed before the next.
    """

    project: Path
    result: subprocess.CompletedProcess[str]
    earlier: tuple[subprocess.CompletedProcess[str], ...] = ()

    @property
    def stdout(self) -> str:
        """What every step printed on standard output, in order."""
        return "".join(step.stdout for step in (*self.earlier, self.result))

    def explain(self) -> str:
        """Copier's output and the changes to the project, for failure messages."""
        printed = "".join(step.stdout + step.stderr for step in (*self.earlier, self.result))
        changes = git("diff", "HEAD", cwd=self.project)
        return f"{printed}\n--- git diff HEAD ---\n{changes}"


def write_revision_of_the_users_tables(project: Path) -> list[subprocess.CompletedProcess[str]]:
    """Autogenerate the revision of the user's tables against an empty database at head, as
    the CHANGELOG of 0.3.0 says: the steps, each with what it printed.
    """
    empty = {"DATABASE_URL": f"sqlite+aiosqlite:///{project / 'empty.db'}"}
    steps = [
        run(["alembic", "upgrade", "head"], project, environment=empty),
        run(["alembic", "revision", "--autogenerate", "-m", "reviews"], project, environment=empty),
    ]
    (project / "empty.db").unlink(missing_ok=True)
    return steps


def follow_up(project: Path) -> None:
    """Make the changes the CHANGELOG asks of the user's code, then write the revision of the
    user's tables.
    """
    for old, new in USER_FOLLOW_UP:
        edit(project / "my_service.py", old, new)
    for step in write_revision_of_the_users_tables(project):
        assert step.returncode == 0, f"{step.args}\n{step.stdout}{step.stderr}"


def update(project: Path, to: str | None = None) -> Update:
    """Run the README's update command in ``project``, to release ``to`` or else the newest
    version, and check that Copier succeeded.
    """
    command = UPDATE_COMMAND if to is None else [*UPDATE_COMMAND, "--vcs-ref", f"v{to}"]
    result = run(command, project)
    outcome = Update(project, result)
    assert result.returncode == 0, outcome.explain()
    return outcome


def update_release_by_release(project: Path) -> Update:
    """Update as the README says: to each release after the project's, committing each
    update before the next, then to the newest version.
    """
    current = Version(recorded_commit(project).removeprefix("v"))
    earlier = []
    for version in (release for release in RELEASES if Version(release) > current):
        step = update(project, to=version)
        assert not conflict_leftovers(project), step.explain()
        git("add", "--all", cwd=project)
        git("commit", "--quiet", "--message", f"Update to sqlmodel-starter {version}", cwd=project)
        earlier.append(step.result)
    last = update(project)
    return Update(project, last.result, tuple(earlier))


def empty_worktree(repository: Path) -> None:
    """Delete every file of ``repository`` but its .git, for the next version to replace."""
    for path in repository.iterdir():
        if path.is_dir() and path.name != ".git":
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


# --- Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_repository(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's git history in brief: the old releases, then the working tree."""
    repository = tmp_path_factory.mktemp("repository") / "sqlmodel-starter"
    repository.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=repository)
    archive = repository.parent / "release.tar"
    for version in RELEASES:
        empty_worktree(repository)
        git("archive", f"--output={archive}", release_commit(version), cwd=ROOT)
        shutil.unpack_archive(archive, repository, filter="data")
        git("add", "--all", cwd=repository)
        git("commit", "--quiet", "--message", f"Release {version}", cwd=repository)
        git("tag", f"v{version}", cwd=repository)
    empty_worktree(repository)
    shutil.copytree(template, repository, dirs_exist_ok=True)
    git("add", "--all", cwd=repository)
    git("commit", "--quiet", "--allow-empty", "--message", "The working tree", cwd=repository)
    git("tag", f"v{newest_version()}", cwd=repository)
    return repository


@pytest.fixture(scope="module")
def edited_update(template_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Update:
    """A project with the user's edits in every place they belong, updated."""
    project = generate(template_repository, tmp_path_factory.mktemp("edited") / "project")
    make_user_edits(project)
    return update_release_by_release(project)


@pytest.fixture(scope="module")
def followed_up_update(edited_update: Update, tmp_path_factory: pytest.TempPathFactory) -> Update:
    """A copy of the updated project, with the changes the CHANGELOG asks of the user's code,
    then the revision of the user's tables.
    """
    project = tmp_path_factory.mktemp("followed-up") / "project"
    shutil.copytree(edited_update.project, project)
    follow_up(project)
    return Update(project, edited_update.result)


@pytest.fixture(scope="module")
def conflicting_update(
    template_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Update:
    """The same edits plus a changed default on a line the next release changed too, updated
    to that release.
    """
    project = generate(template_repository, tmp_path_factory.mktemp("conflicting") / "project")
    edit(project / "my_service.py", TEMPLATE_POOL_SIZE, USER_POOL_SIZE)
    make_user_edits(project)
    return update(project, to=COLLIDING_RELEASE)


# --- An update with the user's edits ---------------------------------------------------------


def test_update_leaves_no_conflict_markers_and_no_rejected_hunks(
    edited_update: Update,
) -> None:
    leftovers = conflict_leftovers(edited_update.project)
    assert not leftovers, "\n".join(leftovers) + "\n" + edited_update.explain()
    assert not unmerged_paths(edited_update.project), edited_update.explain()


def test_every_toml_and_yaml_file_still_parses(edited_update: Update) -> None:
    project = edited_update.project
    files = [*project.rglob("*.toml"), *project.rglob("*.yml"), *project.rglob("*.yaml")]
    assert files, "no TOML or YAML files found"
    for path in files:
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                tomllib.loads(text)
            else:
                yaml.safe_load(text)
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            pytest.fail(f"{path.relative_to(project)} no longer parses: {exc}\n{text}")


def test_the_users_model_routes_default_and_tests_survive_the_update(
    edited_update: Update,
) -> None:
    module = (edited_update.project / "my_service.py").read_text()
    for what, text in [
        ("model", USER_MODELS),
        ("routes", USER_ROUTES),
        ("page size", USER_PAGE_SIZE),
    ]:
        assert text in module, f"the user's {what} changed:\n{edited_update.explain()}"
    tests = (edited_update.project / "tests" / "test_reviews.py").read_text()
    assert tests == USER_TESTS, edited_update.explain()


def test_the_templates_renamed_settings_arrive(edited_update: Update) -> None:
    project = edited_update.project
    module = (project / "my_service.py").read_text()
    example = (project / ".env.example").read_text()
    assert "settings.database_pool_size" in module, edited_update.explain()
    assert "db_pool_size" not in module, edited_update.explain()
    assert "\nDATABASE_POOL_SIZE=10\n" in example, example
    assert "DB_POOL_SIZE" not in example, example


def test_the_migration_renames_the_settings_in_the_users_env(edited_update: Update) -> None:
    env = (edited_update.project / ".env").read_text()
    assert env == MIGRATED_ENV, f"{env}\n{edited_update.explain()}"
    assert ".env: renamed DB_POOL_SIZE to DATABASE_POOL_SIZE" in edited_update.stdout


def test_the_answers_file_records_the_new_version(edited_update: Update) -> None:
    assert recorded_commit(edited_update.project) == f"v{newest_version()}"


def test_the_updated_project_passes_ruff_check(edited_update: Update) -> None:
    result = run(["ruff", "check", "--no-cache", "."], edited_update.project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_updated_project_is_ruff_formatted(edited_update: Update) -> None:
    result = run(["ruff", "format", "--check", "--diff", "--no-cache", "."], edited_update.project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_updated_project_passes_strict_mypy(edited_update: Update) -> None:
    result = run(["mypy", "--cache-dir", "/dev/null", "."], edited_update.project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_new_input_checks_name_what_the_users_code_must_change(
    edited_update: Update,
) -> None:
    checks = ["tests/kit/test_input.py", "tests/kit/test_unknown_fields.py"]
    result = run(["pytest", "-q", "-p", "no:cacheprovider", *checks], edited_update.project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "POST /items/{item_id}/reviews: ReviewCreate drops the fields" in result.stdout
    for unbounded in (
        "POST /items/{item_id}/reviews path item_id",
        "GET /items/{item_id}/reviews path item_id",
    ):
        assert unbounded in result.stdout, result.stdout
    assert "review: give __table_args__ sqlite_autoincrement=True" in result.stdout


def test_the_access_check_names_each_route_that_declares_no_access(
    edited_update: Update,
) -> None:
    check = ["pytest", "-q", "-p", "no:cacheprovider", "tests/kit/test_access.py"]
    result = run(check, edited_update.project)
    assert result.returncode == 1, result.stdout + result.stderr
    for route in ("POST /items/{item_id}/reviews", "GET /items/{item_id}/reviews"):
        failed = (
            f"FAILED tests/kit/test_access.py::test_every_route_declares_who_may_call_it[{route}]"
        )
        assert failed in result.stdout, result.stdout
    assert "declares no access, so it takes any valid token" in result.stdout


def test_the_updated_service_refuses_an_anonymous_write_to_the_users_route(
    followed_up_update: Update,
) -> None:
    check = ["pytest", "-v", "-p", "no:cacheprovider", "tests/kit/test_access.py", "-k", "reviews"]
    result = run(check, followed_up_update.project)
    assert result.returncode == 0, result.stdout + result.stderr
    for test in (
        "test_the_route_refuses_callers_without_a_valid_token[POST /items/{item_id}/reviews]",
        "test_the_route_refuses_a_token_without_each_of_its_scopes[POST /items/{item_id}/reviews]",
        "test_the_route_lets_the_callers_it_allows_past_the_check[GET /items/{item_id}/reviews]",
    ):
        assert f"tests/kit/test_access.py::{test} PASSED" in result.stdout, result.stdout


def test_the_followed_up_project_passes_ruff_and_mypy(followed_up_update: Update) -> None:
    project = followed_up_update.project
    for command in CHECKS:
        result = run(command, project)
        assert result.returncode == 0, result.stdout + result.stderr


USER_TEST_PASSED = "PASSED tests/test_reviews.py::test_list_reviews_runs_one_query"


# The two updated projects' suites run pairwise: this one, release by release from 0.1.0, on
# PostgreSQL; the one adopted from 0.2.0 with rows in it, on SQLite (the check the update
# shows, below).
@pytest.mark.postgres
def test_the_updated_suite_with_the_users_tests_passes_on_postgresql(
    followed_up_update: Update,
) -> None:
    result = run(SUITE, followed_up_update.project, postgres=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert USER_TEST_PASSED in result.stdout, result.stdout


# --- An update whose change collides with the user's -----------------------------------------


def test_a_collision_is_marked_inline_in_that_file_only(conflicting_update: Update) -> None:
    project = conflicting_update.project
    assert unmerged_paths(project) == ["my_service.py"], conflicting_update.explain()
    leftovers = conflict_leftovers(project)
    assert leftovers, conflicting_update.explain()
    assert all(leftover.startswith("my_service.py:") for leftover in leftovers), leftovers


def test_a_collision_shows_the_users_line_and_the_templates_side_by_side(
    conflicting_update: Update,
) -> None:
    module = (conflicting_update.project / "my_service.py").read_text()
    blocks = re.findall(
        r"^<<<<<<< before updating\n(.*?)^=======\n(.*?)^>>>>>>> after updating$",
        module,
        re.M | re.S,
    )
    templates_sides = [templates for users, templates in blocks if USER_POOL_SIZE in users]
    assert len(templates_sides) == 1, conflicting_update.explain()
    # The template's renamed line is there too, in its side or right after the conflict.
    assert module.count("    database_pool_size: int = Field(default=10, ge=1)\n") == 1, module


def test_a_collision_loses_none_of_the_users_other_edits(conflicting_update: Update) -> None:
    project = conflicting_update.project
    module = (project / "my_service.py").read_text()
    assert USER_MODELS in module, conflicting_update.explain()
    assert USER_ROUTES in module, conflicting_update.explain()
    assert USER_PAGE_SIZE in module, conflicting_update.explain()
    assert (project / "tests" / "test_reviews.py").read_text() == USER_TESTS
    assert (project / ".env").read_text() == MIGRATED_ENV


def test_a_collision_still_updates_the_rest_of_the_project(conflicting_update: Update) -> None:
    project = conflicting_update.project
    module = (project / "my_service.py").read_text()
    assert "settings.database_pool_size" in module, conflicting_update.explain()
    assert "\nDATABASE_POOL_SIZE=10\n" in (project / ".env.example").read_text()
    assert "DATABASE_POOL_SIZE" in (project / "tests" / "test_settings.py").read_text()
    assert recorded_commit(project) == f"v{COLLIDING_RELEASE}"


# --- An update without edits, and one without --trust --------------------------------------


def tree(root: Path) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every file outside .git, with the answers' _commit left out."""
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if ".git" in parts or not path.is_file():
            continue
        text = path.read_text()
        if path.name == ".copier-answers.yml":
            text = re.sub(r"^_commit: .*\n", "", text, flags=re.M)
        yield "/".join(parts), text


def test_an_unedited_project_updates_to_exactly_a_fresh_copy_of_the_new_version(
    template_repository: Path, tmp_path: Path
) -> None:
    project = generate(template_repository, tmp_path / "updated")
    updated = dict(tree(update_release_by_release(project).project))
    # With the answers the project has now: a default that changed since its release (such
    # as guard_max_waiting) keeps the value it was generated with.
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    recorded = {name: value for name, value in answers.items() if not name.startswith("_")}
    fresh = dict(tree(render(template_repository, tmp_path / "fresh", **recorded)))
    differences = [
        "".join(
            difflib.unified_diff(
                fresh.get(name, "").splitlines(keepends=True),
                updated.get(name, "").splitlines(keepends=True),
                f"fresh/{name}" if name in fresh else "/dev/null",
                f"updated/{name}" if name in updated else "/dev/null",
            )
        )
        for name in sorted(fresh.keys() | updated.keys())
        if fresh.get(name) != updated.get(name)
    ]
    assert not differences, "\n".join(differences)


def test_an_update_across_a_migration_without_trust_is_refused_and_changes_nothing(
    template_repository: Path, tmp_path: Path
) -> None:
    project = generate(template_repository, tmp_path / "project")
    (project / ".env").write_text(USER_ENV)
    result = run(["copier", "update", "--defaults"], project)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "--trust" in result.stderr, result.stderr
    assert git("status", "--porcelain", cwd=project) == ""
    assert (project / ".env").read_text() == USER_ENV
    assert recorded_commit(project) == f"v{FROM_VERSION}"


# --- An update from 0.2.0, whose databases were made by create_all, to migrations ----------

# A script that runs its body with ``client``, an HTTP client of the project's service started
# on the database its argument names.
WITH_A_CLIENT = """
import asyncio
import json
import sys

import httpx

from my_service import Settings, create_app


async def main() -> None:
    app = create_app(Settings(database_url=sys.argv[1]))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
{body}

asyncio.run(main())
"""


def with_a_client(body: str) -> str:
    """The script that runs ``body`` (Python, unindented) with ``client``."""
    return WITH_A_CLIENT.format(body=textwrap.indent(body, " " * 8))


# What the user's service stored before the update, through its own API.
POPULATE = with_a_client("""\
async def post(path: str, body: object) -> int:
    response = await client.post(path, json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])

owner = await post("/owners", {"name": "Ada"})
tag = await post("/tags", {"name": "desk"})
body = {"name": "Lamp", "price_cents": 1999, "owner_id": owner, "tag_ids": [tag]}
item = await post("/items", body)
await post(f"/items/{item}/reviews", {"stars": 5, "comment": "bright"})
""")
STORED = {
    "owner": [(1, "Ada")],
    "tag": [(1, "desk")],
    "item": [(1, "Lamp", 1999, 1)],
    "itemtaglink": [(1, 1)],
    "review": [(1, 1, 5, "bright")],
}
STORED_QUERIES = {
    "owner": "SELECT id, name FROM owner",
    "tag": "SELECT id, name FROM tag",
    "item": "SELECT id, name, price_cents, owner_id FROM item",
    "itemtaglink": "SELECT item_id, tag_id FROM itemtaglink",
    "review": "SELECT id, item_id, stars, comment FROM review",
}


# What the updated service answers for the owner, started on the upgraded database.
SUMMARY = with_a_client("""\
# Any valid token may read it (0.5.0): one signed as the service checks them, in development.
from my_service import AccessSettings, mint_token

token = mint_token(AccessSettings(), "ada")
response = await client.get("/owners/1/summary", headers={"authorization": f"Bearer {token}"})
print(json.dumps({"status": response.status_code, "body": response.json()}))
""")


@dataclass(frozen=True)
class Adoption:
    """A project updated from 0.2.0 whose database went through the steps Copier printed."""

    update: Update
    database: Path
    shown: list[str]
    refused_start: subprocess.CompletedProcess[str]
    steps: list[subprocess.CompletedProcess[str]]
    summary: subprocess.CompletedProcess[str]

    def explain(self) -> str:
        """Copier's output, the changes, and what each step printed."""
        printed = "".join(f"$ {step.args}\n{step.stdout}{step.stderr}" for step in self.steps)
        return f"{self.update.explain()}\n--- steps ---\n{printed}"


def stored(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """The rows of every table the service and the user's model keep."""
    with closing(sqlite3.connect(database)) as connection:
        return {
            table: connection.execute(query).fetchall() for table, query in STORED_QUERIES.items()
        }


def steps_shown(output: str) -> list[str]:
    """The commands Copier's message after an update shows, in order, without comments."""
    return [
        line.split("  #")[0].strip()
        for line in output.splitlines()
        if line.startswith("  .venv/bin/")
    ]


def shell(
    command: str, project: Path, environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as typed in a shell in ``project``, as the user does."""
    variables = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "TEST_DATABASE_URL", "VIRTUAL_ENV")
    }
    return subprocess.run(
        ["bash", "-c", command],
        cwd=project,
        env={**variables, **environment},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def run_script(source: str, project: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script in ``project``, importing its module, on ``database_url``."""
    return subprocess.run(
        [sys.executable, "-c", source, database_url],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def adopted(template_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Adoption:
    """A 0.2.0 project with a populated database, updated, then taken through the steps
    Copier printed after the update, then the README's for the user's own table.
    """
    project = generate(template_repository, tmp_path_factory.mktemp("adopted") / "project", "0.2.0")
    make_user_edits(project)
    # The user's environment, made when the project was (its packages do not matter: the
    # steps after the update install what the new version needs).
    subprocess.run(["python3", "-m", "venv", ".venv"], cwd=project, check=True)
    database = project / "service.db"
    service = {"DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    populated = run_script(POPULATE, project, service["DATABASE_URL"])
    assert populated.returncode == 0, populated.stdout + populated.stderr
    assert stored(database) == STORED
    outcome = update(project)
    shown = steps_shown(outcome.result.stdout + outcome.result.stderr)
    assert len(shown) >= 2, outcome.explain()
    # Started before the steps, the new version refuses the database.
    refused_start = run_script(SUMMARY, project, service["DATABASE_URL"])
    steps = []
    for command in shown[:-1]:  # the last is the check, once the code is followed up
        steps.append(shell(command, project, service))
        if steps[-1].returncode != 0:
            break
    summary = run_script(SUMMARY, project, service["DATABASE_URL"])
    adoption = Adoption(outcome, database, shown, refused_start, steps, summary)
    for step in steps:
        assert step.returncode == 0, adoption.explain()
    # The README's steps for the user's own table: its revision, then the database has it.
    follow_up(project)
    steps.append(run(["alembic", "stamp", "head"], project, environment=service))
    assert steps[-1].returncode == 0, adoption.explain()
    return adoption


def test_an_update_from_0_2_0_leaves_no_conflicts(adopted: Adoption) -> None:
    project = adopted.update.project
    assert not conflict_leftovers(project), adopted.explain()
    assert not unmerged_paths(project), adopted.explain()
    assert (project / "migrations" / "versions" / "0001_initial.py").is_file()


def test_after_the_update_copier_shows_the_steps_install_then_migrate(adopted: Adoption) -> None:
    install, migrate, check = adopted.shown
    assert install.endswith(".venv/bin/pip install -e . --group dev"), adopted.shown
    assert migrate == ".venv/bin/alembic upgrade head", adopted.shown
    assert check.endswith(".venv/bin/pytest"), adopted.shown


def test_before_the_steps_the_new_version_refuses_to_start_naming_the_command(
    adopted: Adoption,
) -> None:
    refused = adopted.refused_start
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "SchemaBehind" in refused.stderr, refused.stderr
    assert "never migrated" in refused.stderr, refused.stderr
    assert "run `alembic upgrade head`" in refused.stderr, refused.stderr


def test_the_upgrade_adopts_the_database_made_by_0_2_0(adopted: Adoption) -> None:
    upgrade = adopted.steps[1]
    assert "Adopting the tables made before migrations" in upgrade.stderr, adopted.explain()


def test_the_adopted_database_keeps_its_rows_and_matches_the_models(adopted: Adoption) -> None:
    assert stored(adopted.database) == STORED, adopted.explain()
    service = {"DATABASE_URL": f"sqlite+aiosqlite:///{adopted.database}"}
    check = run(["alembic", "check"], adopted.update.project, environment=service)
    assert check.returncode == 0, check.stdout + check.stderr + adopted.explain()
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_summaries_are_right_the_moment_the_upgrade_ends(adopted: Adoption) -> None:
    answered = adopted.summary
    assert answered.returncode == 0, answered.stdout + answered.stderr + adopted.explain()
    summary = json.loads(answered.stdout.splitlines()[-1])
    assert summary["status"] == 200, summary
    body = summary["body"]
    assert (body["item_count"], body["total_price_cents"]) == (1, 1999), body
    assert body["refreshed_at"] is not None, body


def test_the_revision_of_the_users_table_is_numbered_and_creates_it_alone(
    adopted: Adoption,
) -> None:
    versions = adopted.update.project / "migrations" / "versions"
    written = list(versions.glob("*_reviews.py"))
    assert [path.name for path in written] == ["0004_reviews.py"], sorted(
        path.name for path in versions.iterdir()
    )
    revision = written[0].read_text()
    assert 'op.create_table(\n        "review",' in revision, revision
    assert revision.count("op.create_table(") == 1, revision
    assert 'revision: str = "0004"' in revision, revision
    assert 'down_revision: str | None = "0003_owner_subject"' in revision, revision


def test_the_check_shown_after_the_update_passes_once_the_code_is_followed_up(
    adopted: Adoption,
) -> None:
    # Lint, format, types and the whole suite, with the environment the steps installed.
    result = shell(adopted.shown[-1], adopted.update.project, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout, result.stdout


# What create_all of 0.2.0 made: tables, columns, constraints, indexes, as the database
# itself describes them.
CREATED_BY_0_2_0 = """
import asyncio
import sys

from my_service import Settings, create_app


async def main() -> None:
    app = create_app(Settings(database_url=sys.argv[1]))
    async with app.router.lifespan_context(app):
        pass


asyncio.run(main())
"""
SQLITE_SCHEMA = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE '%alembic%'"
)
POSTGRESQL_SCHEMA = [
    "SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length,"
    " is_nullable, column_default FROM information_schema.columns WHERE table_schema = 'public'",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace",
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "SELECT sequencename, data_type FROM pg_sequences WHERE schemaname = 'public'",
]


def schema_of(database_url: str) -> list[tuple[object, ...]]:
    """Every table, column, constraint, index and sequence of a database but Alembic's own."""
    if database_url.startswith("sqlite"):
        with closing(sqlite3.connect(database_url.split("///", 1)[1])) as connection:
            return sorted(connection.execute(SQLITE_SCHEMA).fetchall())

    async def read() -> list[tuple[object, ...]]:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        connection = await asyncpg.connect(dsn)
        try:
            rows = [
                tuple(row) for query in POSTGRESQL_SCHEMA for row in await connection.fetch(query)
            ]
        finally:
            await connection.close()
        return sorted((row for row in rows if "alembic" not in str(row)), key=repr)

    return asyncio.run(read())


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def two_empty_databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """Two empty databases of one kind, SQLite files or new PostgreSQL databases."""
    if request.param == "sqlite":
        yield (
            f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
            f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
        )
        return
    with new_postgres_database() as first, new_postgres_database() as second:
        yield first, second


def test_revision_0001_builds_exactly_what_0_2_0_created_at_start_up(
    template_repository: Path, tmp_path: Path, two_empty_databases: tuple[str, str]
) -> None:
    by_create_all, by_migration = two_empty_databases
    old = render(template_repository, tmp_path / "old", vcs_ref="v0.2.0")
    created = subprocess.run(
        [sys.executable, "-c", CREATED_BY_0_2_0, by_create_all],
        cwd=old,
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    new = render(template_repository, tmp_path / "new")
    migrated = run(["alembic", "upgrade", "0001"], new, environment={"DATABASE_URL": by_migration})
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    expected = schema_of(by_create_all)
    assert expected, "0.2.0 created no tables"
    assert schema_of(by_migration) == expected


# --- From a template clone without tags ------------------------------------------------------


@pytest.fixture(scope="module")
def tagless_repository(template_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the template without its tags, as a fork or a shallow CI checkout may be."""
    clone = tmp_path_factory.mktemp("tagless") / "sqlmodel-starter"
    git("clone", "--quiet", "--no-tags", str(template_repository), str(clone), cwd=clone.parent)
    assert git("tag", cwd=clone) == ""
    return clone


def test_an_update_from_a_clone_without_tags_still_runs_the_migration(
    tagless_repository: Path, tmp_path: Path
) -> None:
    # Copier sees versions like 0.0.0.post1.dev0+<sha> here, and would skip a migration
    # keyed on version 0.2.0: the .env would keep names the service no longer reads.
    release = git("rev-list", "--max-parents=0", "HEAD", cwd=tagless_repository).strip()
    project = render(tagless_repository, tmp_path / "project", vcs_ref=release)
    git("init", "--quiet", "--initial-branch=main", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", "Generate from a fork", cwd=project)
    (project / ".env").write_text(USER_ENV)
    outcome = update(project)
    assert "No git tags found" in outcome.result.stderr, outcome.explain()
    assert (project / ".env").read_text() == MIGRATED_ENV, outcome.explain()
    assert not conflict_leftovers(project), outcome.explain()
    newest = git("describe", "--tags", "--always", cwd=tagless_repository).strip()
    assert recorded_commit(project) == newest


def test_every_migration_runs_on_every_update_whatever_the_versions() -> None:
    config = yaml.safe_load((ROOT / "copier.yml").read_text())
    for migration in config["_migrations"]:
        assert "version" not in migration, (
            f"{migration}: a migration keyed on a version is skipped in a clone without tags; "
            "key the script on what it finds in the project instead"
        )


# --- A revision of the project's own where the template adds one ------------------------------

# A table of the user's in a project generated from 0.4.0, whose revision 0.4.0 numbered
# 0003: the number the template's next revision would have taken, were its ids numbers only.
NOTE_MODEL = '''

class Note(SQLModel, table=True):
    """Something to remember."""

    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(max_length=200)
'''


@dataclass(frozen=True)
class OwnRevision:
    """A 0.4.0 project with a revision and rows of its own, updated; and its database."""

    update: Update
    service: dict[str, str]
    database: Path


@pytest.fixture(scope="module")
def own_revision(
    template_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> OwnRevision:
    project = tmp_path_factory.mktemp("own-revision") / "project"
    generate(template_repository, project, "0.4.0")
    edit(project / "my_service.py", "\n\n# --- Routes ---", NOTE_MODEL + "\n\n# --- Routes ---")
    database = project / "service.db"
    service = {"DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    for command in (
        ["alembic", "upgrade", "head"],
        ["alembic", "revision", "--autogenerate", "-m", "notes"],
        ["alembic", "upgrade", "head"],
    ):
        step = run(command, project, environment=service)
        assert step.returncode == 0, f"{command}\n{step.stdout}{step.stderr}"
    assert (project / "migrations" / "versions" / "0003_notes.py").is_file()
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("INSERT INTO owner (name) VALUES ('Ada')")
        connection.execute("INSERT INTO note (text) VALUES ('keep me')")
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", "Notes", cwd=project)
    return OwnRevision(update(project), service, database)


def test_the_update_joins_the_templates_revision_and_the_projects_own(
    own_revision: OwnRevision,
) -> None:
    project = own_revision.update.project
    assert not conflict_leftovers(project), own_revision.update.explain()
    versions = sorted(path.name for path in (project / "migrations" / "versions").glob("*.py"))
    assert "0003_notes.py" in versions, versions
    assert "0003_owner_subject.py" in versions, versions
    assert versions[-1] == "0004_merge_heads.py", versions
    heads = run(["alembic", "heads"], project, environment=own_revision.service)
    assert heads.stdout.split() == ["0004", "(head)"], heads.stdout + heads.stderr


def test_the_database_with_rows_upgrades_past_both_and_keeps_them(
    own_revision: OwnRevision,
) -> None:
    project, service = own_revision.update.project, own_revision.service
    for command in (["alembic", "upgrade", "head"], ["alembic", "check"]):
        step = run(command, project, environment=service)
        assert step.returncode == 0, f"{command}\n{step.stdout}{step.stderr}"
    with closing(sqlite3.connect(own_revision.database)) as connection:
        assert connection.execute("SELECT text FROM note").fetchall() == [("keep me",)]
        assert connection.execute("SELECT name, subject FROM owner").fetchall() == [("Ada", None)]
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("0004",)
        ]


def test_the_merged_revisions_pass_the_projects_checks_and_migration_tests(
    own_revision: OwnRevision, tmp_path: Path
) -> None:
    project = own_revision.update.project
    merge = "migrations/versions/0004_merge_heads.py"
    for command in (*CHECKS[:2], ["mypy", "--cache-dir", "/dev/null", "."]):
        result = run([*command[:-1], merge], project)
        assert result.returncode == 0, result.stdout + result.stderr
    migrations = ["pytest", "-q", "-p", "no:cacheprovider", "tests/kit/test_migrations.py"]
    result = run(migrations, project)
    assert result.returncode == 0, result.stdout + result.stderr
    # The project's next revision follows the merge, numbered after it.
    copy = copy_of(project, tmp_path / "project")
    empty = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}
    for command in (["alembic", "upgrade", "head"], ["alembic", "revision", "-m", "next"]):
        step = run(command, copy, environment=empty)
        assert step.returncode == 0, f"{command}\n{step.stdout}{step.stderr}"
    assert (copy / "migrations" / "versions" / "0005_next.py").is_file()
