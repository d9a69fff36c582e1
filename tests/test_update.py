"""`copier update` from the last release to the working tree keeps what the user wrote.

The tests build a throwaway git repository of the template: the "Release 0.1.0" commit tagged
v0.1.0, then the working tree (uncommitted changes included) tagged with the newest version
in CHANGELOG.md. They render a project from v0.1.0, commit it, edit it as a user would, and
update it with the command the README gives, to the newest tag.
"""

import difflib
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, render, run
from packaging.version import Version

# The release the update starts from. Its commit is found by its tag or, in a clone without
# tags, by the subject of its release commit.
FROM_VERSION = "0.1.0"
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


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old``, which must occur exactly once, as a user editing by hand would."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path.name} exactly once"
    path.write_text(text.replace(old, new))


def make_user_edits(project: Path) -> None:
    """A model, routes with budgets and their test, a changed default; committed, plus .env."""
    module = project / "my_service.py"
    edit(module, "\n\n# --- Routes", USER_MODELS + "\n\n# --- Routes")
    edit(module, "\n\n\n# --- App", "\n" + USER_ROUTES + "\n\n# --- App")
    edit(module, TEMPLATE_PAGE_SIZE, USER_PAGE_SIZE)
    (project / "tests" / "test_reviews.py").write_text(USER_TESTS)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", "Review items", cwd=project)
    (project / ".env").write_text(USER_ENV)


def generate(template_repository: Path, destination: Path) -> Path:
    """A project rendered from the old release and committed, as `copier copy` users do."""
    project = render(template_repository, destination, vcs_ref=f"v{FROM_VERSION}")
    git("init", "--quiet", "--initial-branch=main", cwd=project)
    git("add", "--all", cwd=project)
    git(
        "commit",
        "--quiet",
        "--message",
        f"Generate from sqlmodel-starter {FROM_VERSION}",
        cwd=project,
    )
    return project


def conflict_leftovers(project: Path) -> list[str]:
    """Conflict markers and .rej files anywhere in ``project``, as file:line."""
    found = []
    for path in sorted(project.rglob("*")):
        parts = path.relative_to(project).parts
        if ".git" in parts or "__pycache__" in parts or not path.is_file():
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
    """A project after `copier update`, and what the command printed."""

    project: Path
    result: subprocess.CompletedProcess[str]

    def explain(self) -> str:
        """Copier's output and the changes to the project, for failure messages."""
        changes = git("diff", "HEAD", cwd=self.project)
        return f"{self.result.stdout}{self.result.stderr}\n--- git diff HEAD ---\n{changes}"


def update(project: Path) -> Update:
    """Run the README's update command in ``project`` and check that Copier succeeded."""
    result = run(UPDATE_COMMAND, project)
    outcome = Update(project, result)
    assert result.returncode == 0, outcome.explain()
    return outcome


# --- Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_repository(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's git history in brief: the old release, then the working tree."""
    repository = tmp_path_factory.mktemp("repository") / "sqlmodel-starter"
    repository.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=repository)
    archive = repository.parent / "release.tar"
    git("archive", f"--output={archive}", release_commit(FROM_VERSION), cwd=ROOT)
    shutil.unpack_archive(archive, repository, filter="data")
    git("add", "--all", cwd=repository)
    git("commit", "--quiet", "--message", f"Release {FROM_VERSION}", cwd=repository)
    git("tag", f"v{FROM_VERSION}", cwd=repository)
    for path in repository.iterdir():
        if path.is_dir() and path.name != ".git":
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
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
    return update(project)


@pytest.fixture(scope="module")
def conflicting_update(
    template_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Update:
    """The same edits plus a changed default on a line the newer template changed too."""
    project = generate(template_repository, tmp_path_factory.mktemp("conflicting") / "project")
    edit(project / "my_service.py", TEMPLATE_POOL_SIZE, USER_POOL_SIZE)
    make_user_edits(project)
    return update(project)


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
    assert ".env: renamed DB_POOL_SIZE to DATABASE_POOL_SIZE" in edited_update.result.stdout


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


USER_TEST_PASSED = "tests/test_reviews.py::test_list_reviews_runs_one_query PASSED"


def test_the_updated_suite_with_the_users_tests_passes_on_sqlite(edited_update: Update) -> None:
    result = run(["pytest", "-v", "-p", "no:cacheprovider"], edited_update.project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert USER_TEST_PASSED in result.stdout, result.stdout


@pytest.mark.postgres
def test_the_updated_suite_with_the_users_tests_passes_on_postgresql(
    edited_update: Update, postgres_database: str
) -> None:
    result = run(
        ["pytest", "-v", "-p", "no:cacheprovider"], edited_update.project, postgres_database
    )
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
    assert "    database_pool_size: int = Field(default=10, ge=1)\n" in templates_sides[0], module


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
    assert recorded_commit(project) == f"v{newest_version()}"


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
    updated = dict(tree(update(generate(template_repository, tmp_path / "updated")).project))
    fresh = dict(tree(render(template_repository, tmp_path / "fresh")))
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
