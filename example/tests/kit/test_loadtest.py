"""loadtest.py against a real uvicorn: the table it prints, and the live line it shows on a
terminal while it runs.
"""

import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import loadtest

from tests.harness.servers import serving

SERVED_APP = """
from my_service import create_app

app = create_app()
"""


class Terminal(io.StringIO):
    """Standard error as a terminal, which the live line is written for."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def health_url(tmp_path: Path) -> Iterator[str]:
    """The URL of /health on the service under a real uvicorn."""
    with serving(tmp_path, SERVED_APP, {}) as port:
        yield f"http://127.0.0.1:{port}/health"


@pytest.mark.parametrize("processes", [1, 2])
def test_a_run_shows_its_figures_while_it_runs_then_prints_its_table(
    health_url: str,
    processes: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    arguments = ["--clients", "4", "--duration", "1.5", "--processes", str(processes)]
    loadtest.main([health_url, *arguments])
    table = capsys.readouterr().out.splitlines()
    (row,) = [line for line in table if line.startswith(health_url)]
    requests, goodput, *_, errors, timeouts, queries = row.split()[1:]
    assert int(requests) > 0, row
    assert float(goodput) > 0, row
    assert (errors, timeouts, queries) == ("0", "0", "0.0"), row
    # Each update rewrites the line ("\r...", then erase to its end); the last clears it.
    *updates, cleared = terminal.getvalue().split("\r")[1:]
    assert cleared == "\x1b[K", "the line is cleared before the table"
    assert len(updates) >= 2, updates  # one every PROGRESS_INTERVAL, from each process
    live = r" *[12]/2 s  \d+ requests  \d+ 2xx/s  0 503s  0 failed  p99 so far [\d.]+ ms\x1b\[K"
    assert re.fullmatch(live, updates[-1]), updates[-1]


@pytest.mark.parametrize("processes", [1, 2])
def test_no_live_line_when_standard_error_is_not_a_terminal(
    health_url: str,
    processes: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "stderr", redirected)
    arguments = ["--clients", "2", "--duration", "0.6", "--processes", str(processes)]
    loadtest.main([health_url, *arguments])
    assert redirected.getvalue() == ""
    assert health_url in capsys.readouterr().out
