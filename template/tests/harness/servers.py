"""The service under a real uvicorn, for what only a server shows (sockets, slow peers)."""

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.harness.databases import ALEMBIC_INI, sqlite_file_at_head


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(
    directory: Path, source: str, settings: Mapping[str, str], *options: str
) -> Iterator[int]:
    """Run the app module ``source``, written to ``directory``, under uvicorn on a free port
    of 127.0.0.1 with these settings, until the block ends; the port.

    The server's database is a SQLite file in ``directory`` at the migrations' head, unless
    ``settings`` name one.
    """
    (directory / "served_app.py").write_text(source)
    # Beside the module, as in the project: the service checks its database against them.
    (directory / "migrations").symlink_to(ALEMBIC_INI.parent / "migrations")
    # The server takes a socket already listening, so no other process can take its port
    # between choosing it and binding it.
    listening = socket.create_server(("127.0.0.1", 0), backlog=2048)
    port = listening.getsockname()[1]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(directory), str(Path.cwd())]),
        **settings,
    }
    if "DATABASE_URL" not in settings:
        environment["DATABASE_URL"] = sqlite_file_at_head(directory / "served.db")
    fd = str(listening.fileno())
    command = [sys.executable, "-m", "uvicorn", "served_app:app", "--fd", fd, *options]
    # At the end, connections a test left open (clients that never read) are cut after a
    # second rather than waited for.
    with listening:
        process = subprocess.Popen(
            [*command, "--no-access-log", "--timeout-graceful-shutdown", "1"],
            env=environment,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(listening.fileno(),),
        )
    assert process.stderr is not None
    log: list[str] = []
    for line in process.stderr:  # until it listens, or the process ends
        log.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        pytest.fail("uvicorn did not start:\n" + "".join(log))
    # Keep reading its log (a line per request): a full pipe would stop the server.
    threading.Thread(target=log.extend, args=(process.stderr,), daemon=True).start()
    try:
        yield port
        assert process.poll() is None, "the server died:\n" + "".join(log[-20:])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # connections still open: do not wait for them
            process.kill()
            process.wait()
