"""Copier refuses each bad answer with a message that says what is wanted."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from projects import render


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_name": "   "}, "Give the project a name"),
        ({"project_name": 'The "Best" API'}, "may not hold double quotes"),
        ({"project_name": "x" * 81}, "80 characters or fewer"),
        ({"project_slug": "Order Service"}, "lower-case letters, digits and single dashes"),
        ({"project_slug": "order--service"}, "single dashes"),
        ({"module_name": "9lives"}, "Use a Python identifier in lower case"),
        ({"module_name": "Orders"}, "Use a Python identifier in lower case"),
        ({"module_name": "class"}, '"class" is a Python keyword'),
        ({"module_name": "json"}, "would shadow the standard library's json module"),
        ({"module_name": "test"}, "would shadow the test package"),
        ({"module_name": "fastapi"}, "would shadow the fastapi package"),
        ({"module_name": "sqlmodel"}, "would shadow the sqlmodel package"),
        ({"description": ""}, "Describe the service in one sentence"),
        ({"author_name": "a\\b"}, "may not hold double quotes, backslashes"),
        ({"author_email": "nobody"}, 'Give an e-mail address such as "you@example.com"'),
        ({"python_version": "3.10"}, "Give a Python version from 3.11 up"),
        ({"python_version": "3"}, "Give a Python version from 3.11 up"),
        ({"database": "mysql"}, "Invalid choice for 'database'"),
        ({"cache_ttl_seconds": 0}, "Give a whole number of seconds from 1 to 86400"),
        ({"cache_max_entries": 0}, "Give a whole number of entries from 1 to 10000000"),
        ({"guard_max_in_flight": 0}, "Give a whole number from 1 to 1000"),
        # Past the settings' own ceilings: the service would refuse such a default.
        ({"cache_ttl_seconds": 86401}, "Give a whole number of seconds from 1 to 86400"),
        ({"cache_max_entries": 10000001}, "Give a whole number of entries from 1 to 10000000"),
        ({"guard_max_in_flight": 1001}, "Give a whole number from 1 to 1000"),
        ({"guard_max_in_flight": 4, "guard_max_waiting": 41}, "from 0 to 40"),
        ({"guard_max_waiting": -1}, "from 0 to 100"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, dict) else "",
)
def test_a_bad_answer_is_refused_with_what_is_wanted(
    template: Path, tmp_path: Path, answers: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        render(template, tmp_path / "project", **answers)
    assert not (tmp_path / "project" / "pyproject.toml").exists()


@pytest.mark.parametrize(
    ("project_name", "slug", "module"),
    [
        ("My Service", "my-service", "my_service"),
        ("  Order  Service v2 ", "order-service-v2", "order_service_v2"),
        ("3D Printer Queue", "3d-printer-queue", "service_3d_printer_queue"),
    ],
)
def test_slug_and_module_derive_from_the_name(
    template: Path, tmp_path: Path, project_name: str, slug: str, module: str
) -> None:
    project = render(template, tmp_path / "project", project_name=project_name)
    assert f'name = "{slug}"' in (project / "pyproject.toml").read_text()
    assert (project / f"{module}.py").is_file()


def test_the_waiting_line_defaults_to_twice_the_requests_in_flight(
    template: Path, tmp_path: Path
) -> None:
    project = render(template, tmp_path / "project", guard_max_in_flight=8)
    example = (project / ".env.example").read_text()
    assert "GUARD_MAX_IN_FLIGHT=8\n" in example
    assert "GUARD_MAX_WAITING=16\n" in example
    assert "DATABASE_POOL_SIZE=8\n" in example


def test_the_largest_answers_give_defaults_the_service_accepts(
    template: Path, tmp_path: Path
) -> None:
    answers = {
        "cache_ttl_seconds": 86400,
        "cache_max_entries": 10_000_000,
        "guard_max_in_flight": 1000,
        "guard_max_waiting": 10_000,
    }
    project = render(template, tmp_path / "project", **answers)
    # Only the rendering's defaults: no variable of this environment may stand in for them.
    environment = {"PATH": os.environ.get("PATH", "")}
    subprocess.run(
        [sys.executable, "-c", "import my_service; my_service.Settings.from_env()"],
        cwd=project,
        env=environment,
        check=True,
    )
