"""The testbed: the template rendered with real Copier, on a freshly seeded database.

``testbed()`` renders the working tree (PostgreSQL, example domain), creates a database of
its own, migrates it with the rendered project's migrations, seeds it (``dataset.py``), and
drops it and the rendering again when the block ends. ``make_nplus1`` derives the N+1
variant of the rendered service and ``make_open_reads`` the one whose reads need no token;
``Service`` says what the rendered module ships.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import copier
from dataset import ITEMS, OWNERS, TAGS, seed
from postgres import execute, sqlalchemy_url
from servers import VENV_BIN

ROOT = Path(__file__).resolve().parent.parent
MODULE = "my_service"
# Where ``testbed()`` creates its database, unless the command line says otherwise.
DEFAULT_POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# The N+1 variant: the list route keeps the owner join but loads each row's tags on its own,
# with the same statement the service batches for the whole page.
NPLUS1_PATCHES = [
    (
        "    if tags:\n"
        '        links = await connection.all(_TAGS_OF_ITEMS, {"item_ids": list(tags)})\n',
        "    for one_item in list(tags):\n"
        '        links = await connection.all(_TAGS_OF_ITEMS, {"item_ids": [one_item]})\n',
    ),
]

# The open-reads variant: the list and get-one routes public, so that driven without a token
# they run without the token check, beside the service driven with one.
OPEN_READS = "ours, open reads"
OPEN_READS_PATCHES = [
    (f"@access(AUTHENTICATED)\nasync def {route}(", f"@access(PUBLIC)\nasync def {route}(")
    for route in ("get_item", "list_items")
]


@dataclass
class Testbed:
    """A seeded rendering: where it is, how to reach its database, and when it began."""

    work: Path
    project: Path
    dsn: str
    database_url: str
    tag_links: int
    began: float  # time.perf_counter() before the rendering

    def minutes(self) -> float:
        """Minutes since the testbed began: what a whole run took, so far."""
        return (time.perf_counter() - self.began) / 60


@contextmanager
def testbed(name: str, postgres_url: str) -> Iterator[Testbed]:
    """A rendering and a seeded database named after ``name``, both gone when the block ends.

    ``postgres_url`` names a database whose user may create databases; the new one is
    created beside it.
    """
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"sqlmodel-starter-{name}-"))
    database = f"{name}_{os.getpid()}"
    dsn = f"{postgres_url.rsplit('/', 1)[0]}/{database}"
    try:
        print(f"rendering the template into {work}", flush=True)
        project = render(work)
        asyncio.run(execute(postgres_url, f'CREATE DATABASE "{database}"'))
        create_tables(project, sqlalchemy_url(dsn))
        links = asyncio.run(seed(dsn))
        print(f"seeded {OWNERS} owners, {TAGS} tags, {ITEMS} items, {links} tag links", flush=True)
        yield Testbed(work, project, dsn, sqlalchemy_url(dsn), links, began)
    finally:
        asyncio.run(execute(postgres_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        shutil.rmtree(work, ignore_errors=True)


def render(work: Path) -> Path:
    """Render the working tree (uncommitted changes included) with the example on PostgreSQL."""
    snapshot = work / "template"
    shutil.copytree(
        ROOT, snapshot,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".*_cache", "my-service"),
    )  # fmt: skip
    project = work / "project"
    copier.run_copy(
        str(snapshot), project, data={"database": "postgresql", "include_example": True},
        defaults=True, unsafe=False, quiet=True,
    )  # fmt: skip
    return project


def create_tables(project: Path, database_url: str) -> None:
    """Create the tables as a team would: the rendered project's migrations, to head."""
    subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"], cwd=project, check=True,
        env={**os.environ, "DATABASE_URL": database_url}, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def make_nplus1(project: Path, work: Path) -> Path:
    """A copy of the rendered project whose list route loads tags with one query per row."""
    return make_variant(project, work / "nplus1", NPLUS1_PATCHES)


def make_open_reads(project: Path, work: Path) -> Path:
    """A copy of the rendered project whose list and get-one routes are public."""
    return make_variant(project, work / "open-reads", OPEN_READS_PATCHES)


def make_variant(project: Path, copy: Path, patches: list[tuple[str, str]]) -> Path:
    """The rendered module in ``copy``, each (old, new) of ``patches`` applied once."""
    copy.mkdir()
    source = (project / f"{MODULE}.py").read_text()
    for old, new in patches:
        if old not in source:
            raise SystemExit(f"cannot build {copy.name}: {old.strip()!r} left the module")
        source = source.replace(old, new, 1)
    (copy / f"{MODULE}.py").write_text(source)
    return copy


def settings_of(project: Path, environment: dict[str, str]) -> dict[str, str]:
    """The rendered service's settings and their defaults, as the module declares them."""
    script = (
        f"import json, {MODULE}\n"
        f"print(json.dumps({{name: str(f.default) for name, f in "
        f"{MODULE}.Settings.model_fields.items()}}))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env={**os.environ, **environment},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(json.loads(output))


@dataclass
class Service:
    """What the rendered module ships, as its settings show: a guard, a cache, their sizes."""

    has_guard: bool
    has_cache: bool
    capacity: int  # requests in flight the guard admits (without a guard: the pool's size)
    waiting: int  # requests the guard lets wait in line

    @classmethod
    def read(cls, project: Path, environment: dict[str, str], pool_size: int) -> "Service":
        """Ask the module for its settings under ``environment``."""
        settings = settings_of(project, environment)
        has_guard = "guard_enabled" in settings
        if not has_guard:
            return cls(False, "cache_ttl_seconds" in settings, pool_size, pool_size // 2)
        capacity = int(settings.get("guard_max_in_flight", pool_size))
        waiting = int(settings.get("guard_max_waiting", capacity // 2))
        return cls(True, "cache_ttl_seconds" in settings, capacity, waiting)
