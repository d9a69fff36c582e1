"""The README's "Try it" command serves the generated project exactly as printed.

Everything before `cd my-service` installs this environment and renders the defaults, which
the other tests cover; this one copies the run's rendering of the defaults, puts this
environment where the command expects `.venv`, and runs the rest of the printed command: the
migrations, then the server.
"""

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from projects import ROOT, copy_of, free_port, shared_rendering

CD = "cd my-service && "


def serve_command() -> str:
    """What the README's serve command runs in the generated project."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- serve-command -->\n```sh\n(.*?)\n```", readme, re.S)
    assert found, "README.md has no ```sh block right after <!-- serve-command -->"
    command = found.group(1)
    assert command.count(CD) == 1, command
    return command.split(CD, 1)[1]


@pytest.fixture
def served(
    template: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> Iterator[str]:
    """The rendered defaults, started with the README's command; the server's base URL."""
    defaults = shared_rendering(template, tmp_path_factory, "defaults")
    project = copy_of(defaults, tmp_path / "my-service")
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    port = free_port()
    environment = {
        **{name: value for name, value in os.environ.items() if name != "DATABASE_URL"},
        "UVICORN_PORT": str(port),  # uvicorn reads its options from UVICORN_* as well
    }
    process = subprocess.Popen(
        ["bash", "-c", serve_command()],
        cwd=project,
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    log = []
    for line in process.stderr:  # wait for start-up, or for the command to end
        log.append(line)
        if "Application startup complete" in line:
            break
    else:
        pytest.fail("the serve command did not start the service:\n" + "".join(log))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def call_command(base_url: str) -> str:
    """The README's command that calls a write route, against ``base_url``."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- call-command -->\n```sh\n(.*?)\n```", readme, re.S)
    assert found, "README.md has no ```sh block right after <!-- call-command -->"
    return found.group(1).replace("http://127.0.0.1:8000", base_url)


def test_the_readme_serve_command_migrates_the_database_and_serves_it(
    served: str, tmp_path: Path
) -> None:
    project = tmp_path / "my-service"
    with httpx.Client(base_url=served, timeout=10) as client:
        # Without a token, a write is refused, and nothing is written.
        assert client.post("/owners", json={"name": "Eve"}).status_code == 401
        created = subprocess.run(
            ["bash", "-c", call_command(served)], cwd=project, capture_output=True, text=True
        )
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout) == {"id": 1, "name": "Ada"}, created.stdout
        token = subprocess.run(
            [sys.executable, "dev_token.py"], cwd=project, capture_output=True, text=True
        ).stdout.strip()
        listed = client.get("/owners", headers={"authorization": f"Bearer {token}"})
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == [{"id": 1, "name": "Ada"}]
