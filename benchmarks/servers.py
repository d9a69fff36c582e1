"""The servers the benchmarks start: uvicorn processes pinned to a core, and their upkeep.

The server gets core 0 and the clients core 1, so that the clients' work does not count
against the server's; the several-process points share both cores (``BOTH_CORES``).

Every server checks tokens against the run's secret (``tokens.py``), and its clients send
the run's token, unless the server is ``anonymous``: one whose measured routes are public,
driven without a token.
"""

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tokens

HOST = "127.0.0.1"
SERVER_CORE, CLIENT_CORE, BOTH_CORES = "0", "1", "0,1"
VENV_BIN = Path(sys.executable).parent
BENCHMARKS = Path(__file__).resolve().parent  # a Server's directory for ``ceiling:app``


@dataclass
class Server:
    """A uvicorn process serving one app, pinned to the server core (by default)."""

    name: str
    port: int
    directory: Path
    target: str
    environment: dict[str, str]
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    workers: int = 1
    cores: str = SERVER_CORE
    anonymous: bool = False  # its clients send no token

    def start(self, log_dir: Path) -> None:
        """Start uvicorn, its output in ``log_dir``, and wait until it answers."""
        self._check_port_is_free()
        log = (log_dir / f"{self.name}.log").open("wb")
        environment = {**os.environ, **tokens.ENVIRONMENT, **self.environment}
        self.process = subprocess.Popen(
            self._command(), cwd=self.directory, env=environment,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(300):
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited at start-up; see {log.name}")
            ready = urllib.request.Request(
                f"http://{HOST}:{self.port}/items/1", headers=tokens.HEADERS
            )
            try:
                with urllib.request.urlopen(ready, timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not answer on port {self.port} within 30 s")

    def headers(self) -> dict[str, str]:
        """What this server's clients send besides the request itself: the token, or nothing."""
        return {} if self.anonymous else tokens.HEADERS

    def _check_port_is_free(self) -> None:
        # Another process on the port would answer the readiness check in our server's place.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, self.port))
            except OSError:
                raise SystemExit(f"port {self.port} for {self.name} is taken") from None

    def _command(self) -> list[str]:
        return [
            "taskset", "-c", self.cores, str(VENV_BIN / "uvicorn"), self.target,
            "--host", HOST, "--port", str(self.port), "--loop", "uvloop", "--http", "httptools",
            "--workers", str(self.workers), "--no-access-log", "--log-level", "warning",
            *self.extra,
        ]  # fmt: skip

    def stop(self) -> None:
        """Stop the server if it runs; a server never started is left as it is."""
        if self.process is not None:
            stop_process(self.process)

    def settle(self, limit: float = 15.0) -> None:
        """Wait until the server has drained the requests a finished load left queued.

        wrk stops sending at its deadline, but a server behind on its work keeps serving the
        backlog; servers share one core, so the next point must not start before that ends.
        """
        deadline = time.perf_counter() + limit
        previous = -1
        while time.perf_counter() < deadline:
            try:
                busy = self.cpu_ticks()
            except OSError:
                return
            if busy - previous <= 1:
                return
            previous = busy
            time.sleep(0.2)

    def cpu_ticks(self) -> int:
        """The CPU time the server has used, its workers' included, in clock ticks."""
        pid = self.process.pid if self.process else 0
        # With --workers, the work is done by the children of uvicorn's supervisor.
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return sum(cpu_ticks(process) for process in [pid, *map(int, children)])

    @contextmanager
    def peak_rss(self) -> Iterator[list[float]]:
        """Sample this server's resident memory while the block runs; yields [peak MiB]."""
        peak = [0.0]
        stop = threading.Event()
        status = Path(f"/proc/{self.process.pid if self.process else 0}/status")

        def sample() -> None:
            while not stop.is_set():
                try:
                    for line in status.read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            peak[0] = max(peak[0], int(line.split()[1]) / 1024)
                except OSError:
                    return
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield peak
        finally:
            stop.set()
            sampler.join()


@contextmanager
def serving(log_dir: Path, *servers: Server) -> Iterator[None]:
    """Start ``servers`` in order for the block, and stop them when it ends, however it ends."""
    try:
        for server in servers:
            server.start(log_dir)
        yield
    finally:
        for server in servers:
            server.stop()


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Terminate ``process``, killing it if it has not exited after 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A TCP port nothing listens on at the moment, for a server of its own."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_ticks(pid: int) -> int:
    """The CPU time ``pid`` has used, user and system, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime
