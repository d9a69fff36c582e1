"""Tokens for the tests, signed with a secret of the run's own that every app and server the
tests start checks them against (``AUTH_SECRET``, set here for this process and the ones it
starts).
"""

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from my_service import AccessSettings, access_of, api_routes, mint_token
from my_service import app as service_app

import tests.harness.databases  # noqa: F401  (clears the service's settings first)

TEST_SECRET = secrets.token_urlsafe(32)
os.environ["AUTH_SECRET"] = TEST_SECRET
ACCESS = AccessSettings(auth_secret=TEST_SECRET)
# The private keys an identity provider signs with.
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
# The subject the tests' client calls as, unless a test names another.
TEST_SUBJECT = "test-caller"


def token(scopes: Iterable[str] = (), subject: str = TEST_SUBJECT, **claims: Any) -> str:
    """A token for ``subject`` holding ``scopes``, valid for an hour unless ``claims`` say
    otherwise (``exp=...``, ``aud=...``).
    """
    return mint_token(ACCESS, subject, scopes, **claims)


def bearer(
    scopes: Iterable[str] = (), subject: str = TEST_SUBJECT, **claims: Any
) -> dict[str, str]:
    """The Authorization header of ``token(scopes, subject, **claims)``."""
    return {"authorization": f"Bearer {token(scopes, subject, **claims)}"}


def declared_scopes(app: FastAPI) -> frozenset[str]:
    """Every scope a route of ``app`` asks for."""
    return frozenset(
        scope
        for route in api_routes(app.routes)
        for scope in getattr(access_of(route.endpoint), "scopes", ())
    )


def full_access(app: FastAPI, subject: str = TEST_SUBJECT) -> dict[str, str]:
    """The Authorization header of a caller who may call every route of ``app``."""
    return bearer(declared_scopes(app), subject)


# The Authorization header of a caller who may call every route of the service.
FULL_ACCESS = full_access(service_app)


class KeySetServer:
    """An identity provider's key set endpoint on 127.0.0.1, in a thread of its own: it
    serves ``keys`` as a JSON Web Key Set, or ``garbage`` when that is set, and counts the
    requests it gets.
    """

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.garbage: bytes | None = None
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = server.garbage
                if body is None:
                    body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def public_jwk(private_key: SigningKey, key_id: str) -> dict[str, Any]:
    """The public half of ``private_key`` as a JSON Web Key named ``key_id``."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": key_id, "use": "sig"}


def signed(
    private_key: SigningKey,
    algorithm: str,
    key_id: str | None,
    *,
    issuer: str,
    scopes: Iterable[str] = (),
    subject: str = TEST_SUBJECT,
    **claims: Any,
) -> str:
    """A token as an identity provider would sign it, for the audience the tests use."""
    now = int(time.time())
    payload = {
        "iss": issuer,
        "sub": subject,
        "aud": ACCESS.auth_audience,
        "iat": now,
        "exp": now + 3600,
        "scope": " ".join(scopes),
        **claims,
    }
    headers = {"kid": key_id} if key_id is not None else None
    return jwt.encode(payload, private_key, algorithm=algorithm, headers=headers)
