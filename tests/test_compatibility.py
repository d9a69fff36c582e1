"""A service updated from 0.4.0 needs no change to its deployment or its dashboards.

The working tree's service reads exactly the environment variables 0.4.0's reads, from the
environment and from ``.env`` alike, and lists each in .env.example (as 0.4.0 does); its
GET /metrics exposes exactly the series 0.4.0's exposes, each of the same type with the same
label names. The tests render the release (its tag v0.4.0 or its "Release 0.4.0" commit) and
the working tree with the same answers, and run a probe inside each rendering, in a process
of its own, that:

- lists the variables its ``Settings`` read, walking the fields of the settings classes as
  pydantic-settings matches them (a field's alias, else its class's ``env_prefix`` and its
  name, upper-cased unless the class is case-sensitive; a nested settings class reads its
  own; a nested model with ``env_nested_delimiter`` reads ``OUTER<delimiter>INNER``; the
  variable that would take a nested model whole, as JSON, is not counted);
- sets each variable alone, in the environment and then in ``.env``, to a value no setting
  takes, to check that ``Settings`` reads it from both;
- migrates a throwaway SQLite database with the project's migrations, starts the app's
  lifespan, serves a few requests so per-route series exist, and scrapes /metrics.

A variable or series added on purpose goes in ADDED_VARIABLES or ADDED_SERIES; when a new
release becomes the baseline, move BASELINE on and empty both.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import copier
import httpx
import pytest
from alembic import command
from alembic.config import Config
from conftest import ROOT
from prometheus_client.parser import text_string_to_metric_families
from pydantic import AliasChoices, AliasPath, BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings
from test_update import git, release_commit

# The release whose variables and series every later version keeps.
BASELINE = "0.4.0"
# Added on purpose since BASELINE, each with why: variable -> reason, series -> its
# "type {label,names}" as the failure message prints it.
ADDED_VARIABLES: dict[str, str] = {
    # 0.5.0: who may call each route; production refuses to start without keys.
    "ENVIRONMENT": "development (the default) or production",
    "AUTH_JWKS_URL": "the identity provider's key set",
    "AUTH_SECRET": "a shared HS256 secret, for development and tests",
    "AUTH_ISSUER": "the iss tokens must carry",
    "AUTH_AUDIENCE": "the aud tokens must hold",
    "AUTH_LEEWAY": "clock difference allowed on exp and nbf",
    "AUTH_JWKS_TIMEOUT": "how long a key set fetch may take",
    "AUTH_JWKS_REFRESH_INTERVAL": "the least time between two fetches for unknown key ids",
    "AUTH_MAX_TOKEN_BYTES": "the longest Authorization header read",
    "AUTH_VERIFIED_TOKENS": "how many verified tokens are kept until they expire",
    # 0.5.0: the probes on a port of their own, ahead of the traffic.
    "PROBE_PORT": "a port for /health and /ready besides the service's",
}
ADDED_SERIES: dict[str, str] = {
    # 0.5.0: what the token checks did.
    "access_tokens_verified_total": "counter {}",
    "access_tokens_refused_total": "counter {}",
    "access_key_fetches_total": "counter {}",
    "access_key_fetch_failures_total": "counter {}",
    "access_keys": "gauge {}",
    # 0.5.0: whether the database is known to be down, and what the breaker did meanwhile.
    "database_available": "gauge {}",
    "database_outages_total": "counter {}",
    "database_refused_total": "counter {}",
    "database_probes_total": "counter {}",
}

# Answers that change the settings' defaults (the database's URL), which must not change the
# variables they read. Both keep the example: without it, a service reads and exposes a
# subset (no SUMMARY_REFRESH_DELAY, no refresh_* series).
ANSWERS = {"defaults": {}, "postgresql": {"database": "postgresql"}}
# Requests served before the scrape, so that the request histogram has its series: a kit
# route, one that queries, the example's lists, and one that matches no route.
REQUESTS = ("/health", "/ready", "/owners", "/items", "/no-such-route")
# What the probe sets a variable to: no setting takes it as it is (not a number, a boolean,
# a URL, a log format or a channel name), and a plain string setting would hold it.
SENTINEL = "compat-sentinel"


# --- The probe ----------------------------------------------------------------------------
# These functions run inside a rendered project, in a process of its own (two renderings
# define the same tables, which one process cannot import twice). They are written here to
# be linted with the rest, and sent as source, after _PROBE_HEADER's imports.

_PROBE_HEADER = """\
from __future__ import annotations

import asyncio
import fcntl
import importlib
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.config import Config
from prometheus_client.parser import text_string_to_metric_families
from pydantic import AliasChoices, AliasPath, BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings
"""


def probe(module_name: str, request: str, report: str) -> None:
    """Write what the rendered ``module_name`` reads and exposes to ``report``, as JSON.

    ``request`` (JSON) holds ``paths``, the requests to serve before the scrape, and the
    ``sentinel`` to set variables to; once it has scraped, the probe reads from its standard
    input the variables to check besides its own (so the baseline's names can come while it
    works). DATABASE_URL names the database.
    """
    asked = json.loads(request)
    # As `alembic upgrade head` in the project does, without a process of its own.
    command.upgrade(Config("alembic.ini"), "head")
    service = importlib.import_module(module_name)
    variables = settings_variables(service.Settings)
    exposed = series(asyncio.run(scrape(service, asked["paths"])))
    candidates = sorted(set(json.load(sys.stdin)) | set(variables))
    found = {
        "variables": variables,
        "read": variables_read(service.Settings, candidates, asked["sentinel"]),
        "series": exposed,
    }
    Path(report).write_text(json.dumps(found, indent=1, sort_keys=True))


def settings_variables(
    model: type[BaseModel], prefix: str = "", delimiter: str | None = None, exact: bool = False
) -> dict[str, str]:
    """Each environment variable ``model`` reads, with the field it sets (Class.field)."""
    if issubclass(model, BaseSettings):
        # A settings class reads the environment itself, by its own configuration.
        config: Any = model.model_config
        prefix = config.get("env_prefix") or ""
        delimiter = config.get("env_nested_delimiter")
        exact = bool(config.get("case_sensitive"))
    found: dict[str, str] = {}
    for name, field in model.model_fields.items():
        inner = field_model(field.annotation)
        if inner is not None and issubclass(inner, BaseSettings):
            found.update(settings_variables(inner))
            continue
        for key in field_aliases(field) or [prefix + name]:
            variable = key if exact else key.upper()
            if inner is not None and delimiter:
                found.update(settings_variables(inner, variable + delimiter, delimiter, exact))
            else:
                owner = next(c for c in model.__mro__ if name in getattr(c, "__annotations__", {}))
                found[variable] = f"{owner.__name__}.{name}"
    return found


def field_aliases(field: FieldInfo) -> list[str]:
    """The names a field is read by instead of its own: its validation alias, else its alias."""
    for alias in (field.validation_alias, field.alias):
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names = [choice.path[0] if isinstance(choice, AliasPath) else choice for choice in choices]
        if found := [name for name in names if isinstance(name, str)]:
            return found
    return []


def field_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, through Optional, unions and Annotated; None for a value."""
    if isinstance(annotation, type):
        return annotation if issubclass(annotation, BaseModel) else None
    for argument in typing.get_args(annotation):
        if (model := field_model(argument)) is not None:
            return model
    return None


def variables_read(
    settings: type[BaseSettings], candidates: list[str], value: str
) -> dict[str, list[str]]:
    """Where ``settings`` read each candidate from: the sources (the environment, ``.env`` in
    the working directory) in which setting it alone to ``value`` changes them or has them
    refuse it.
    """
    outside = {name: os.environ.pop(name) for name in candidates if name in os.environ}
    dotenv = Path(".env")
    assert not dotenv.exists(), "the probe needs a project without a .env of its own"
    defaults = settings().model_dump()
    read: dict[str, list[str]] = {name: [] for name in candidates}
    for name in candidates:
        for source in ("environment", ".env"):
            if source == "environment":
                os.environ[name] = value
            else:
                dotenv.write_text(f"{name}={value}\n")
            try:
                changed = settings().model_dump() != defaults
            except Exception:  # refused: read, and found wanting
                changed = True
            finally:
                os.environ.pop(name, None)
                dotenv.unlink(missing_ok=True)
            if changed:
                read[name].append(source)
    os.environ.update(outside)
    return read


async def scrape(service: Any, paths: list[str]) -> str:
    """GET /metrics from the service's app, after its lifespan started and ``paths`` served."""
    app = service.create_app(service.Settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            for path in paths:
                await client.get(path)
            response = await client.get("/metrics")
    response.raise_for_status()
    return response.text


def series(exposition: str) -> dict[str, str]:
    """Each series of a Prometheus text exposition, as "type {label,names}"."""
    return {
        sample.name: f"{family.type} {{{','.join(sorted(sample.labels))}}}"
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


_PROBE_FUNCTIONS = (
    probe,
    settings_variables,
    field_aliases,
    field_model,
    variables_read,
    scrape,
    series,
)


# --- Helpers ------------------------------------------------------------------------------


def render_service(template: Path, destination: Path, answers: Mapping[str, Any]) -> Path:
    """Render what the probe needs, as conftest's render does: the module, its migrations and
    .env.example (the generated tests and documents, left out, take half the time).
    """
    copier.run_copy(
        str(template),
        destination,
        data=dict(answers),
        defaults=True,
        unsafe=False,
        quiet=True,
        exclude=["tests", ".github", "README.md"],
    )
    return destination


@dataclass(frozen=True)
class Rendering:
    """What one rendering's service reads and exposes, as its probe found it."""

    name: str
    variables: dict[str, str]
    read: dict[str, list[str]]
    series: dict[str, str]
    documented: list[str]


class Probe:
    """The probe, started in a rendered project on a SQLite file of its own."""

    def __init__(self, project: Path, name: str) -> None:
        source = _PROBE_HEADER + "".join(
            "\n\n" + inspect.getsource(function) for function in _PROBE_FUNCTIONS
        )
        (project / "compat_probe.py").write_text(source + "\n\nprobe(*sys.argv[1:])\n")
        self.project = project
        self.name = name
        self.report = project.parent / "probe.json"
        request = {"paths": REQUESTS, "sentinel": SENTINEL}
        # As conftest's run does: never a database of the environment's.
        environment = {
            variable: value
            for variable, value in os.environ.items()
            if variable not in ("DATABASE_URL", "TEST_DATABASE_URL")
        }
        environment["DATABASE_URL"] = f"sqlite+aiosqlite:///{project.parent / 'probe.db'}"
        arguments = ["my_service", json.dumps(request), str(self.report)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "compat_probe", *arguments],
            cwd=project,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, candidates: list[str]) -> Rendering:
        """What the probe found, once it also checked that ``candidates`` are read."""
        output, errors = self.process.communicate(json.dumps(candidates), timeout=300)
        assert self.process.returncode == 0, f"the probe failed in {self.name}:\n{output}{errors}"
        found = json.loads(self.report.read_text())
        example = (self.project / ".env.example").read_text()
        documented = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", example, re.MULTILINE)
        return Rendering(self.name, found["variables"], found["read"], found["series"], documented)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@dataclass(frozen=True)
class Versions:
    """The same answers rendered by BASELINE and by the working tree."""

    answers: str
    baseline: Rendering
    current: Rendering


def probe_both(
    answers: str,
    template: Path,
    baseline_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Versions:
    """Render ``answers`` with both versions and probe them side by side."""
    directory = tmp_path_factory.mktemp(answers)
    with (
        Probe(
            render_service(baseline_template, directory / "baseline" / "project", ANSWERS[answers]),
            f"{BASELINE}'s rendering",
        ) as baseline_probe,
        Probe(
            render_service(template, directory / "current" / "project", ANSWERS[answers]),
            "the working tree's rendering",
        ) as current_probe,
    ):
        baseline = baseline_probe.finish(candidates=[])
        current = current_probe.finish(candidates=sorted(baseline.variables))
    return Versions(answers, baseline, current)


@contextmanager
def shared_by_workers(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """The path ``name`` in a directory of this run that every xdist worker shares, held by
    one worker at a time: the first to hold it computes what the others then read.
    """
    directory = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        directory = directory.parent  # the run's, above each worker's own
    with (directory / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield directory / name


def differences(
    before: Mapping[str, str], after: Mapping[str, str], compare_values: bool = True
) -> list[str]:
    """What went, what came and (with ``compare_values``) what changed, one line each."""
    lines = [f"  gone: {name}   (was {before[name]})" for name in sorted(before - after.keys())]
    lines += [f"  new:  {name}   ({after[name]})" for name in sorted(after - before.keys())]
    if compare_values:
        lines += [
            f"  changed: {name}   {before[name]} -> {after[name]}"
            for name in sorted(before.keys() & after.keys())
            if before[name] != after[name]
        ]
    return lines


# --- Fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template as released in BASELINE, outside git."""
    directory = tmp_path_factory.mktemp("baseline") / "sqlmodel-starter"
    directory.mkdir()
    archive = directory.parent / "release.tar"
    git("archive", f"--output={archive}", release_commit(BASELINE), cwd=ROOT)
    shutil.unpack_archive(archive, directory, filter="data")
    return directory


@pytest.fixture(scope="module", params=list(ANSWERS))
def versions(
    request: pytest.FixtureRequest,
    template: Path,
    baseline_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Versions:
    """Both versions rendered with one set of answers and probed side by side, once a run."""
    with shared_by_workers(tmp_path_factory, f"compatibility-{request.param}.json") as found:
        if not found.exists():
            both = probe_both(request.param, template, baseline_template, tmp_path_factory)
            found.write_text(json.dumps(asdict(both)))
        recorded = json.loads(found.read_text())
    return Versions(
        recorded["answers"], Rendering(**recorded["baseline"]), Rendering(**recorded["current"])
    )


# --- Tests --------------------------------------------------------------------------------


def test_the_service_reads_the_environment_variables_of_the_baseline_and_no_other(
    versions: Versions,
) -> None:
    expected = versions.baseline.variables | ADDED_VARIABLES
    lines = differences(expected, versions.current.variables, compare_values=False)
    assert not lines, (
        f"the settings read other environment variables than {BASELINE}'s "
        f"(answers: {versions.answers}); a deployment would need changes:\n"
        + "\n".join(lines)
        + "\n(a variable added on purpose goes in ADDED_VARIABLES)"
    )


def test_the_settings_take_each_variable_from_the_environment_and_from_dotenv(
    versions: Versions,
) -> None:
    # Checked on the settings themselves, whatever classes hold the fields: a variable of
    # the baseline's, or one the probe lists for the working tree, set alone in either
    # source, changes what they hold.
    baseline, current = versions.baseline, versions.current
    both = ["environment", ".env"]
    unread_at_baseline = {
        name: baseline.read[name] for name in baseline.variables if baseline.read[name] != both
    }
    assert not unread_at_baseline, (
        f"setting these alone to {SENTINEL!r} changed {BASELINE}'s settings only from the "
        f"sources listed, so the probe cannot tell whether a version reads them: "
        f"{unread_at_baseline}"
    )
    listed = baseline.variables | current.variables
    unread = {name: current.read[name] for name in sorted(listed) if current.read[name] != both}
    assert not unread, (
        f"setting each of these alone to {SENTINEL!r} changed the working tree's settings "
        f"(answers: {versions.answers}) only from the sources listed, not from both the "
        "environment and .env:\n"
        + "\n".join(
            f"  {name}: read from {sources or 'neither'}   ({BASELINE}: "
            f"{baseline.variables.get(name, '-')}, now: {current.variables.get(name, '-')})"
            for name, sources in unread.items()
        )
    )


def test_env_example_lists_exactly_the_variables_the_settings_read(versions: Versions) -> None:
    read, documented = versions.current.variables, versions.current.documented
    missing = sorted(read.keys() - set(documented))
    extra = sorted(set(documented) - read.keys())
    repeated = sorted({name for name in documented if documented.count(name) > 1})
    assert (missing, extra, repeated) == ([], [], []), (
        f"the working tree's .env.example (answers: {versions.answers}) does not list each "
        f"variable the settings read exactly once:\n  read but not listed: {missing}\n"
        f"  listed but not read: {extra}\n  listed more than once: {repeated}"
    )


def test_metrics_expose_the_series_of_the_baseline_with_their_types_and_labels(
    versions: Versions,
) -> None:
    expected = versions.baseline.series | ADDED_SERIES
    lines = differences(expected, versions.current.series)
    assert not lines, (
        f"GET /metrics exposes other series than {BASELINE}'s (answers: {versions.answers}); "
        "dashboards and alerts would need changes:\n"
        + "\n".join(lines)
        + "\n(a series added on purpose goes in ADDED_SERIES)"
    )
