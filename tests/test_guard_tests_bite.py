"""The generated guard tests catch a slow upload holding capacity: drop the body deadline and
the suite must fail.
"""

from pathlib import Path

from projects import break_module, run

BODY_DEADLINE = "async with asyncio.timeout(self.timeout):\n            while True:\n"
# The body is still read before the guard admits the request, but for as long as it takes.
NO_DEADLINE = "async with asyncio.timeout(None):\n            while True:\n"


def test_removing_the_body_deadline_fails_the_slow_upload_test(project: Path) -> None:
    break_module(project, BODY_DEADLINE, NO_DEADLINE)
    result = run(["pytest", "-q", "-p", "no:cacheprovider", "tests/kit/test_server.py"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = "FAILED tests/kit/test_server.py::test_slow_uploads_hold_no_place_and_are_cut_off_at_"
    assert failed in result.stdout
