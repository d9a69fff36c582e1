"""Access for the benchmarks: a secret of the run's own, and one token signed with it.

Every service the benchmarks start checks HS256 tokens against ``AUTH_SECRET``
(``ENVIRONMENT``); the secret is made with ``secrets`` when this module is imported, so it
lives only in this process and in the environments of the servers it starts, never on disk.
Every client sends ``TOKEN``: the claims the kit's ``mint_token`` writes, holding every
scope the example declares and ``admin``, since the seeded owners have no subject and
writes to their items need it.
"""

import secrets
import time

import jwt

AUDIENCE = "my_service"
SCOPES = ("owners:write", "tags:write", "items:write", "admin")
SECRET = secrets.token_urlsafe(48)
ENVIRONMENT = {"AUTH_SECRET": SECRET, "AUTH_AUDIENCE": AUDIENCE}

_issued = int(time.time())
TOKEN = jwt.encode(
    {
        "sub": "benchmark",
        "aud": AUDIENCE,
        "iat": _issued,
        "exp": _issued + 24 * 3600,
        "scope": " ".join(SCOPES),
    },
    SECRET,
    algorithm="HS256",
)
AUTHORIZATION = f"Bearer {TOKEN}"
HEADERS = {"Authorization": AUTHORIZATION}


def check_not_refused(refused: int, answers: int, what: str) -> None:
    """Stop the run when most of ``answers`` were ``refused``: such a load measures nothing."""
    if answers and refused * 2 > answers:
        raise SystemExit(
            f"{what}: {refused:,} of {answers:,} answers were errors; 401s or 403s mean the "
            "token was not sent or not accepted (AUTH_SECRET, AUTH_AUDIENCE, its scopes)"
        )
