"""What a generated project shares with its ecosystem: CI, container, pre-commit, install.

No container engine runs here, so the Dockerfile is linted, and the commands it runs are run
in the project as the image would run them: its install in a fresh venv, its start command
(migrations, then uvicorn) and its health check against that server.
"""

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from projects import (
    ROOT,
    copy_of,
    defaults_suite,
    free_port,
    mypy_cache,
    run,
    shared_rendering,
)
from test_render import MATRIX

# The interpreter a stock venv is made with: the oldest Python the template supports.
STOCK_PYTHON = shutil.which("python3.11")
# Before this pip, `pip install --group` does not exist.
FIRST_PIP_WITH_GROUPS = Version("25.1")
ENVIRONMENT_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", params=MATRIX, ids=str)
def project(
    request: pytest.FixtureRequest, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return shared_rendering(template, tmp_path_factory, request.param, **MATRIX[request.param])


@pytest.fixture(scope="module")
def default_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_rendering(template, tmp_path_factory, "defaults")


def tool(name: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command of this environment's bin/ (actionlint, hadolint, pre-commit) in ``cwd``."""
    return subprocess.run(
        [str(ENVIRONMENT_BIN / name), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        # Hooks find ruff and mypy on PATH, as in an activated environment.
        env={**os.environ, "PATH": f"{ENVIRONMENT_BIN}{os.pathsep}{os.environ['PATH']}"},
    )


def shell(
    command: str, cwd: Path, environment: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as a shell would in ``cwd``, capturing its output; ``environment``,
    or this process's, as its variables.
    """
    return subprocess.run(
        command,
        shell=True,
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- GitHub Actions --------------------------------------------------------------------------


def test_the_ci_workflow_passes_actionlint(project: Path) -> None:
    result = tool("actionlint", "-no-color", ".github/workflows/ci.yml", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ci_workflow_runs_every_check_and_the_tests_on_both_databases(project: Path) -> None:
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    checks, postgresql = workflow["jobs"]["checks"], workflow["jobs"]["postgresql"]
    commands = [step.get("run", "") for step in checks["steps"]]
    for wanted in ("ruff check", "ruff format --check", "mypy .", "pytest"):
        assert any(command.startswith(wanted) for command in commands), (wanted, commands)
    assert "TEST_DATABASE_URL" not in checks.get("env", {})
    assert postgresql["steps"][-1]["run"] == "pytest"
    assert postgresql["services"]["postgres"]["image"].startswith("postgres:")
    assert "--health-cmd pg_isready" in postgresql["services"]["postgres"]["options"]
    url = postgresql["env"]["TEST_DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://postgres:postgres@localhost:5432/"), url
    for job in (checks, postgresql):
        setup = next(step for step in job["steps"] if "setup-python" in step.get("uses", ""))
        assert setup["with"]["python-version"] == answers["python_version"]


def test_every_check_of_the_ci_workflow_passes_in_the_rendering(
    default_project: Path,
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    workflow = yaml.safe_load((default_project / ".github" / "workflows" / "ci.yml").read_text())
    # The checks write their caches into the project: a copy, for the rendering is shared.
    project = copy_of(default_project, tmp_path / "project")
    # mypy starts from the cache of this run's check of the same rendering (projects.py).
    cache = mypy_cache(template, tmp_path_factory, tmp_path / "mypy-cache")
    for step in workflow["jobs"]["checks"]["steps"]:
        if "run" not in step or step["name"] == "Install":
            continue
        if step["run"] == "pytest":
            # The suite as test_render.py runs it for the default answers, in the same
            # environment, with the README's recipe followed: run once for all three.
            result, _ = defaults_suite(template, tmp_path_factory)
        else:
            # The project's environment is this one, as after the workflow's install step.
            result = shell(
                step["run"],
                project,
                {
                    **os.environ,
                    "PATH": f"{ENVIRONMENT_BIN}{os.pathsep}{os.environ['PATH']}",
                    "MYPY_CACHE_DIR": str(cache),
                },
            )
        assert result.returncode == 0, (
            f"{step['name']}: {step['run']}\n{result.stdout}{result.stderr}"
        )


def test_actionlint_finds_a_broken_workflow(default_project: Path, tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    text = (default_project / ".github" / "workflows" / "ci.yml").read_text()
    broken.write_text(text.replace("runs-on: ubuntu-latest", "runs-on: ${{ matrix.os }}", 1))
    result = tool("actionlint", "-no-color", ".github/workflows/ci.yml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "matrix" in result.stdout


# --- pre-commit ------------------------------------------------------------------------------


def test_pre_commit_hooks_are_local_and_run_from_the_projects_environment(project: Path) -> None:
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repository in config["repos"] for hook in repository["hooks"]]
    assert [repository["repo"] for repository in config["repos"]] == ["local"]
    assert {hook["language"] for hook in hooks} <= {"system", "unsupported"}
    tools = [".venv/bin/ruff", ".venv/bin/ruff", ".venv/bin/mypy"]
    assert [hook["entry"].split()[0] for hook in hooks] == tools
    assert tool("pre-commit", "validate-config", cwd=project).returncode == 0


RUN_ALL_HOOKS = ("run", "--all-files", "--color=never")


def run_all_hooks(repository: Path, mypy_cache: Path) -> subprocess.CompletedProcess[str]:
    """Run every hook as a commit from an IDE does: the environment is not activated, so
    nothing of it is on PATH. The mypy hook starts from ``mypy_cache`` (MYPY_CACHE_DIR).
    """
    path = os.pathsep.join(
        entry for entry in os.environ["PATH"].split(os.pathsep) if Path(entry) != ENVIRONMENT_BIN
    )
    variables = {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}
    return subprocess.run(
        [str(ENVIRONMENT_BIN / "pre-commit"), *RUN_ALL_HOOKS],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=600,
        env={**variables, "PATH": path, "MYPY_CACHE_DIR": str(mypy_cache)},
    )


@dataclass(frozen=True)
class Repository:
    """A git repository of a rendering, for pre-commit to run in, and a mypy cache of its own
    (a copy of the one of this run's check of the same rendering, projects.py).
    """

    path: Path
    mypy_cache: Path

    def git(self, *arguments: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=Tests", "-c", "user.email=tests@example.com", *arguments],
            cwd=self.path,
            check=True,
            capture_output=True,
        )


@pytest.fixture
def repository(
    default_project: Path,
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> Repository:
    path = tmp_path / "project"
    shutil.copytree(default_project, path)
    # The project's environment where the README makes it, .venv (ignored by git).
    (path / ".venv").mkdir()
    (path / ".venv" / "bin").symlink_to(ENVIRONMENT_BIN, target_is_directory=True)
    repository = Repository(path, mypy_cache(template, tmp_path_factory, tmp_path / "mypy-cache"))
    repository.git("init", "--quiet")
    repository.git("add", "--all")
    repository.git("commit", "--quiet", "--message", "Generate")
    return repository


def test_every_pre_commit_hook_passes_on_a_fresh_rendering(repository: Repository) -> None:
    result = run_all_hooks(repository.path, repository.mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("ruff check", "ruff format", "mypy"):
        assert re.search(rf"^{name}\.+Passed$", result.stdout, re.MULTILINE), result.stdout


def test_the_pre_commit_hooks_stop_a_badly_typed_unformatted_file(repository: Repository) -> None:
    (repository.path / "careless.py").write_text('import os\ncount: int = "one"\n')
    repository.git("add", "careless.py")
    result = run_all_hooks(repository.path, repository.mypy_cache)
    assert result.returncode == 1, result.stdout + result.stderr
    for name in ("ruff check", "mypy"):
        assert re.search(rf"^{name}\.+Failed$", result.stdout, re.MULTILINE), result.stdout


# --- The container ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of a Dockerfile: its instructions, as (keyword, arguments), in order."""

    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == keyword]

    def environment(self) -> dict[str, str]:
        variables: dict[str, str] = {}
        for arguments in self.all("ENV"):
            for assignment in shlex.split(arguments):
                name, value = assignment.split("=", 1)
                variables[name] = value
        return variables


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of the Dockerfile at ``path``; continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword == "FROM":
            stages.append(Stage([]))
        stages[-1].instructions.append((keyword, arguments.strip()))
    return stages


def exec_form(arguments: str) -> list[str]:
    """The command of a CMD or HEALTHCHECK in exec form (a JSON array), after any options."""
    command = json.loads(arguments[arguments.index("[") :])
    assert isinstance(command, list), arguments
    return [str(part) for part in command]


def test_the_dockerfile_passes_hadolint(project: Path) -> None:
    result = tool("hadolint", "--no-color", "Dockerfile", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_a_careless_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD python app.py\n"
    )
    result = tool("hadolint", "--no-color", "Dockerfile", cwd=tmp_path)
    assert result.returncode == 1
    for rule in ("DL3007", "DL3008", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_the_image_is_built_in_two_stages_and_runs_unprivileged(project: Path) -> None:
    builder, final = dockerfile_stages(project / "Dockerfile")
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    base = f"python:{answers['python_version']}-slim"
    assert builder.all("FROM") == [f"{base} AS builder"]
    assert final.all("FROM") == [base]
    # The final stage installs nothing: it copies the builder's environment.
    assert not any("install" in command for command in final.all("RUN"))
    assert "--from=builder /opt/venv /opt/venv" in final.all("COPY")
    (user,) = final.all("USER")
    assert not user.startswith(("0", "root")), user
    assert final.all("HEALTHCHECK")
    assert final.all("CMD")


def test_compose_starts_the_service_once_postgresql_is_healthy(project: Path) -> None:
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    database, service = compose["services"]["db"], compose["services"]["service"]
    assert database["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(database["healthcheck"]["test"])
    assert service["build"] == "."
    assert service["depends_on"] == {"db": {"condition": "service_healthy"}}
    url = service["environment"]["DATABASE_URL"]
    assert url == f"postgresql+asyncpg://postgres:postgres@db:5432/{answers['module_name']}"
    assert database["environment"]["POSTGRES_DB"] == answers["module_name"]


@pytest.fixture(scope="module")
def image_environment(default_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage's environment, made by its own commands from what it copies."""
    assert STOCK_PYTHON, "python3.11 is needed on PATH to build the image's environment"
    builder, _ = dockerfile_stages(default_project / "Dockerfile")
    root = tmp_path_factory.mktemp("image")
    source, environment = root / "src", root / "venv"
    source.mkdir()
    for copy in builder.all("COPY"):
        *names, _ = copy.split()
        for name in names:
            shutil.copy(default_project / name, source)
    # The image's `python` is the base image's; here, the same version from PATH.
    interpreter = root / "bin"
    interpreter.mkdir()
    (interpreter / "python").symlink_to(STOCK_PYTHON)
    for command in builder.all("RUN"):
        result = subprocess.run(
            command.replace("/opt/venv", str(environment)),
            shell=True,
            cwd=source,
            env={**os.environ, **builder.environment(), "PATH": f"{interpreter}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"RUN {command}\n{result.stdout}{result.stderr}"
    return environment


@dataclass(frozen=True)
class Container:
    """The final stage's files in a directory, and the environment its commands run with."""

    app: Path
    environment: dict[str, str]
    script: str


@pytest.fixture
def container(default_project: Path, image_environment: Path, tmp_path: Path) -> Container:
    """What the final stage copies from the project, with its ENV and its start script."""
    _, final = dockerfile_stages(default_project / "Dockerfile")
    app = tmp_path / "app"
    app.mkdir()
    for copy in final.all("COPY"):
        if copy.startswith("--from="):
            continue
        *names, target = copy.split()
        for name in names:
            source = default_project / name
            if source.is_dir():
                shutil.copytree(source, app / target)
            elif source.exists():
                shutil.copy(source, app)
    environment = {
        **os.environ,
        **final.environment(),
        "PATH": f"{image_environment / 'bin'}:/usr/bin:/bin",
        # What a deployment gives the image (compose.yaml too): keys to check tokens with.
        "AUTH_SECRET": secrets.token_urlsafe(32),
        "AUTH_AUDIENCE": "my_service",
    }
    assert environment["PROBE_PORT"] == IMAGE_PROBE_PORT, "the image's checks point at it"
    environment["PROBE_PORT"] = str(free_port())
    environment["DATABASE_URL"] = environment["DATABASE_URL"].replace("/data/", f"{tmp_path}/")
    (start,) = final.all("CMD")
    shell, option, script = exec_form(start)
    assert (shell, option) == ("sh", "-c")
    return Container(app, environment, script)


def test_the_image_has_what_it_copies_and_migrates_before_it_serves(
    default_project: Path, container: Container
) -> None:
    _, final = dockerfile_stages(default_project / "Dockerfile")
    for copy in final.all("COPY"):
        if not copy.startswith("--from="):
            *names, _ = copy.split()
            for name in names:
                assert (default_project / name).exists(), f"COPY {copy}: no {name} in the project"
    *before, _ = container.script.split(" && ")
    assert before == ["alembic upgrade head"], container.script
    run_steps_before_serving(container)


IMAGE_PROBE_PORT = "8001"


def on_probe_port(check: list[str], container: Container) -> list[str]:
    """A check of the image's or compose's, pointed at the probe port this test's server has."""
    probe = container.environment["PROBE_PORT"]
    return [part.replace(f":{IMAGE_PROBE_PORT}/", f":{probe}/") for part in check]


def run_steps_before_serving(container: Container) -> None:
    """What the image's command runs before uvicorn (the migrations), as it runs them."""
    *before, _ = container.script.split(" && ")
    for step in before:
        result = shell(step, container.app, container.environment, timeout=120)
        assert result.returncode == 0, f"{step}\n{result.stdout}{result.stderr}"


def test_the_health_check_passes_while_the_start_commands_server_runs(
    default_project: Path, container: Container
) -> None:
    _, final = dockerfile_stages(default_project / "Dockerfile")
    serve = container.script.split(" && ")[-1]
    assert serve.startswith("exec uvicorn "), serve
    assert "--port 8000" in serve, serve
    run_steps_before_serving(container)
    port = free_port()
    serve = serve.replace("--port 8000", f"--port {port}").replace("0.0.0.0", "127.0.0.1")
    (healthcheck,) = final.all("HEALTHCHECK")
    check = on_probe_port(exec_form(healthcheck), container)
    with serving(serve, container.app, container.environment) as server:
        healthy = subprocess.run(check, env=container.environment, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        # The API's port answers /health too, and logs it (LOG_FORMAT=json: one JSON object).
        api = [
            part.replace(f":{container.environment['PROBE_PORT']}/", f":{port}/") for part in check
        ]
        answered = subprocess.run(api, env=container.environment, capture_output=True, timeout=30)
        assert answered.returncode == 0, answered.stderr
    assert server.stderr is not None
    # The probe port logs nothing: probes every few seconds would bury the requests.
    logged = [json.loads(line) for line in server.stderr if line.startswith("{")]
    assert [entry["route"] for entry in logged if "route" in entry] == ["/health"], logged
    gone = subprocess.run(check, env=container.environment, capture_output=True, timeout=30)
    assert gone.returncode != 0


@contextmanager
def serving(
    command: str, cwd: Path, environment: dict[str, str]
) -> Iterator["subprocess.Popen[str]"]:
    """The shell ``command``'s uvicorn, from start-up complete until the block ends."""
    server = subprocess.Popen(
        command, shell=True, cwd=cwd, env=environment, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        log = []
        for line in server.stderr:
            log.append(line)
            if "Application startup complete" in line:
                break
        else:
            pytest.fail("uvicorn did not start:\n" + "".join(log))
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_compose_checks_readiness_which_fails_while_the_database_cannot_answer(
    default_project: Path, container: Container
) -> None:
    _, final = dockerfile_stages(default_project / "Dockerfile")
    (liveness,) = final.all("HEALTHCHECK")
    compose = yaml.safe_load((default_project / "compose.yaml").read_text())
    kind, *readiness = compose["services"]["service"]["healthcheck"]["test"]
    assert kind == "CMD"
    serve = container.script.split(" && ")[-1].replace("0.0.0.0", "127.0.0.1")
    nowhere = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    unreachable = {**container.environment, "DATABASE_URL": nowhere, "CACHE_NOTIFY": "false"}
    run_steps_before_serving(container)
    passed = {}
    servers = (("reachable", container.environment), ("unreachable", unreachable))
    for database, environment in servers:
        port = free_port()
        with serving(serve.replace("--port 8000", f"--port {port}"), container.app, environment):
            for name, check in (("liveness", exec_form(liveness)), ("readiness", readiness)):
                command = on_probe_port(check, container)
                result = subprocess.run(command, env=environment, capture_output=True, timeout=30)
                passed[database, name] = result.returncode == 0
    assert passed == {
        ("reachable", "liveness"): True,
        ("reachable", "readiness"): True,
        # A database out of reach takes the instance out of service, but never restarts it.
        ("unreachable", "liveness"): True,
        ("unreachable", "readiness"): False,
    }


# --- Installing ------------------------------------------------------------------------------


def first_command(readme: str) -> str:
    """The first line of the first shell block: the README's install command."""
    block = re.search(r"^```sh\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert block, "the README has no ```sh block"
    return block.group(1).splitlines()[0]


def test_the_readme_install_command_works_with_the_stock_pip_of_a_new_venv(
    default_project: Path, tmp_path: Path
) -> None:
    assert STOCK_PYTHON, "python3.11 is needed on PATH for a stock venv"
    bundled = subprocess.run(
        [STOCK_PYTHON, "-c", "import ensurepip; print(ensurepip.version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Version(bundled) < FIRST_PIP_WITH_GROUPS, f"{bundled}: pick an older Python"
    install = first_command((default_project / "README.md").read_text())
    # Copier's closing message gives the same command.
    assert f"\n    {install}\n" in (ROOT / "copier.yml").read_text()
    assert install.startswith("python3 -m venv .venv && ")
    project = tmp_path / "project"
    shutil.copytree(default_project, project)
    result = shell(
        install.replace("python3 -m venv", f"{STOCK_PYTHON} -m venv", 1), project, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dev_group = tomllib.loads((project / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    listed = subprocess.run(
        [".venv/bin/python", "-m", "pip", "list", "--format=json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {canonicalize_name(package["name"]) for package in json.loads(listed)}
    wanted = {canonicalize_name(Requirement(requirement).name) for requirement in dev_group}
    assert wanted <= installed, f"not installed: {sorted(wanted - installed)}"
    imported = subprocess.run(
        [".venv/bin/python", "-c", "import my_service"], cwd=project, capture_output=True
    )
    assert imported.returncode == 0, imported.stderr


# --- The template's own version and its README -----------------------------------------------


def test_the_templates_version_is_its_newest_release() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## (\S+) \(\d{4}-\d{2}-\d{2}\)$", changelog, re.MULTILINE)
    assert released, "CHANGELOG.md has no '## X.Y.Z (YYYY-MM-DD)' release headings"
    assert version == str(max(Version(release) for release in released))


def test_the_try_it_project_records_a_template_path_it_can_update_from(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    serve = readme.split("<!-- serve-command -->", 1)[1]
    command = first_command(serve)
    copy = next(part for part in command.split(" && ") if "copier copy" in part)
    clone = tmp_path / "sqlmodel-starter"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", ".venv", "my-service"))
    git = ["git", "-c", "user.name=Tests", "-c", "user.email=tests@example.com"]
    for step in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "Clone"]):
        subprocess.run([*git, *step], cwd=clone, check=True, capture_output=True)
    result = shell(
        copy.replace(".venv/bin/copier", str(ENVIRONMENT_BIN / "copier"), 1), clone, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    project = clone / "my-service"
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert Path(answers["_src_path"]) == clone
    for step in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "Try"]):
        subprocess.run([*git, *step], cwd=project, check=True, capture_output=True)
    updated = run(["copier", "update", "--defaults", "--trust", "--vcs-ref", "HEAD"], project)
    assert updated.returncode == 0, updated.stdout + updated.stderr
