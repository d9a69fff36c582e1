"""The generated access tests catch a route that lets in callers it should not: for one of
the team's that declares nothing, one whose routes escape the check, a broken check, and
each refusal of the token attack list without its fix.
"""

from pathlib import Path

import pytest
from projects import break_module, edit, run

PYTEST = ["pytest", "-q", "-p", "no:cacheprovider"]
APP_FACTORY = "\n\n# --- App ---"
# A route of the team's, with a budget and a test, but no word of who may call it.
UNDECLARED_ROUTE = """


@router.get("/notes/count")
@query_budget(0)
async def count_notes() -> dict[str, int]:
    return {"notes": 0}
"""
# A versioned API of the team's, mounted as an app of its own: its route declares a scope,
# but nothing of the service's app (its dependencies) runs for it.
MOUNTED_APP = """


legacy = FastAPI()


@legacy.get("/reports")
@query_budget(0)
@access("reports:read")
async def reports() -> dict[str, str]:
    return {"reports": "all of them"}
"""
BUILT = "        lifespan=refresh_summaries,\n    )\n"
BUILT_AND_MOUNTED = (
    '        lifespan=refresh_summaries,\n    )\n    service.mount("/legacy", legacy)\n'
    "    return service\n"
)


def test_a_route_of_yours_without_a_declaration_fails_by_name(project: Path) -> None:
    edit(project / "my_service.py", APP_FACTORY, UNDECLARED_ROUTE + APP_FACTORY)
    result = run([*PYTEST, "tests/kit/test_access.py"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = "FAILED tests/kit/test_access.py::test_every_route_declares_who_may_call_it"
    assert f"{failed}[GET /notes/count]" in result.stdout, result.stdout
    assert "decorate count_notes with @access(PUBLIC)" in result.stdout


def test_routes_that_escape_the_check_under_a_mount_fail_by_name(project: Path) -> None:
    module = project / "my_service.py"
    edit(module, APP_FACTORY, MOUNTED_APP + APP_FACTORY)
    edit(module, "    return build_app(\n", "    service = build_app(\n")
    edit(module, BUILT, BUILT_AND_MOUNTED)
    result = run([*PYTEST, "tests/kit/test_access.py", "-k", "mounted"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the routes of the app mounted at /legacy escape the access check" in result.stdout


def test_a_check_that_lets_everyone_in_fails_for_every_protected_route(project: Path) -> None:
    break_module(
        project,
        "    if not rule.authenticated:\n        return ANONYMOUS\n",
        "    return ANONYMOUS\n",
    )
    result = run([*PYTEST, "tests/kit/test_access.py", "-k", "refuses"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    for route in ("POST /items", "PATCH /items/{item_id}", "GET /owners"):
        failed = (
            "FAILED tests/kit/test_access.py::test_the_route_refuses_callers_without_a_valid_token"
        )
        assert f"{failed}[{route}]" in result.stdout, result.stdout


def test_a_check_that_forgets_the_scopes_fails_for_every_scoped_route(project: Path) -> None:
    break_module(
        project, "    missing = rule.scopes - caller.scopes\n", "    missing = frozenset[str]()\n"
    )
    result = run([*PYTEST, "tests/kit/test_access.py", "-k", "scopes"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = (
        "FAILED tests/kit/test_access.py::test_the_route_refuses_a_token_without_each_of_its_scopes"
    )
    assert f"{failed}[POST /items]" in result.stdout, result.stdout


# Each refusal of the attack list, taken out, and the test of tests/kit/test_tokens.py that
# must then fail.
ATTACKS = {
    "alg none and HS256 keyed with the public key": (
        "        if algorithm not in self._algorithms:\n",
        "        if False:\n",
        ["test_an_unsigned_token_is_refused", "test_a_token_signed_with_the_public_key_as_a_"],
    ),
    "a 100 KB token": (
        "        if len(authorization) > self.settings.auth_max_token_bytes:\n",
        "        if False:\n",
        ["test_a_huge_token_is_refused_unread"],
    ),
    "a key id that names nothing": (
        "        if time.monotonic() - self._last_fetch >= self.interval:\n",
        "        if True:\n",
        ["test_a_key_id_the_provider_does_not_publish_is_refused_after_one_fetch"],
    ),
    "a provider down before any key loaded": (
        "            raise KeysNotLoaded\n",
        "            raise _Refused(\"the token's key id is not one of the issuer's keys\")\n",
        ["test_a_provider_down_at_start_means_503s_not_401s"],
    ),
    "an outage after keys loaded": (
        "            self.stats.key_fetch_failures += 1\n",
        "            self.stats.key_fetch_failures += 1\n            self.keys = {}\n",
        ["test_an_outage_after_start_keeps_the_keys_already_loaded"],
    ),
    "a token that reaches the log": (
        "        verified = self._verified.get(token)\n",
        '        logger.info("token %s", token)\n        verified = self._verified.get(token)\n',
        ["test_no_token_claim_or_key_reaches_a_log_a_metric_or_an_answer"],
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_refusal_of_the_attack_list_has_a_test_that_fails_without_it(
    project: Path, attack: str
) -> None:
    old, new, tests = ATTACKS[attack]
    break_module(project, old, new)
    result = run([*PYTEST, "tests/kit/test_tokens.py", "-k", " or ".join(tests)], project)
    assert result.returncode == 1, result.stdout + result.stderr
    for test in tests:
        assert f"FAILED tests/kit/test_tokens.py::{test}" in result.stdout, result.stdout
