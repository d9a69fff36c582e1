"""Bearer tokens against an identity provider's keys: what the service accepts, and the
attacks it refuses, each with a clear answer and never a 500.

The provider is a real HTTP server on 127.0.0.1 serving a JSON Web Key Set; the service
fetches it as it would in production.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import FastAPI

from my_service import (
    AccessSettings,
    CallerDep,
    Settings,
    SettingsError,
    TokenVerifier,
    access,
    create_app,
    expect_queries,
    mint_token,
    query_budget,
)

from tests.harness.databases import sqlite_file_at_head
from tests.harness.servers import free_port
from tests.harness.tokens import KeySetServer, SigningKey, public_jwk, signed
from tests.harness.waiting import scrape

ISSUER = "https://issuer.test/"
SCOPE = "reports:read"
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def provider() -> Iterator[KeySetServer]:
    """The identity provider's key set: an ES256, an RS256 and an EdDSA key."""
    server = KeySetServer()
    server.keys = [
        public_jwk(EC_KEY, "ec-1"),
        public_jwk(RSA_KEY, "rsa-1"),
        public_jwk(ED_KEY, "ed-1"),
    ]
    yield server
    server.close()


Started = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def started(provider: KeySetServer, tmp_path: Path) -> Started:
    """Start the service on the provider's keys (or on ``settings``), with a route of its
    own that needs the scope ``reports:read`` and answers who called it.
    """

    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        given = {
            "database_url": sqlite_file_at_head(tmp_path / "service.db"),
            "auth_secret": None,
            "auth_jwks_url": provider.url,
            "auth_issuer": ISSUER,
            **settings,
        }
        app = create_app(Settings(**given))

        @app.get("/whoami")
        @query_budget(0)
        @access(SCOPE)
        async def whoami(caller: CallerDep) -> dict[str, Any]:
            return {"subject": caller.subject, "scopes": sorted(caller.scopes)}

        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            yield app, client

    return start


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def verifier(app: FastAPI) -> TokenVerifier:
    verifier: TokenVerifier = app.state.access
    return verifier


def unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    """A token put together by hand: unsigned, or signed with HMAC-SHA256 and ``key``."""

    def encoded(part: bytes) -> str:
        return base64.urlsafe_b64encode(part).rstrip(b"=").decode()

    message = f"{encoded(json.dumps(header).encode())}.{encoded(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, message.encode(), hashlib.sha256).digest()
    return f"{message}.{encoded(signature)}"


def claims(**more: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "ada", "aud": "my_service", "exp": now + 60, **more}


def assert_invalid_token(response: httpx.Response, description: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": description}
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", error_description="{description}"'
    )


@pytest.mark.parametrize(
    ("key", "algorithm", "key_id"),
    [(EC_KEY, "ES256", "ec-1"), (RSA_KEY, "RS256", "rsa-1"), (ED_KEY, "EdDSA", "ed-1")],
    ids=["ES256", "RS256", "EdDSA"],
)
async def test_a_token_the_provider_signed_names_its_caller_and_costs_no_statement(
    started: Started, key: SigningKey, algorithm: str, key_id: str
) -> None:
    token = signed(key, algorithm, key_id, issuer=ISSUER, scopes=[SCOPE, "other"])
    async with started() as (app, client):
        for _ in range(3):
            with expect_queries(0):
                response = await client.get("/whoami", headers=bearer(token))
            assert response.json() == {"subject": "test-caller", "scopes": ["other", SCOPE]}
        # Checked once (the route's own CallerDep is the same check), then kept.
        assert verifier(app).stats.tokens_verified == 1


@pytest.mark.parametrize(
    "granted",
    [{"scp": f"{SCOPE} other"}, {"scp": [SCOPE, "other"]}, {"permissions": [SCOPE]}],
    ids=["scp as Entra ID sends it", "scp as a list", "permissions as Auth0 sends it"],
)
async def test_scopes_are_read_from_scp_and_permissions_too(
    started: Started, granted: dict[str, Any]
) -> None:
    token = signed(EC_KEY, "ES256", "ec-1", issuer=ISSUER, **granted)
    async with started() as (_, client):
        response = await client.get("/whoami", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert SCOPE in response.json()["scopes"]


async def test_a_token_for_another_issuer_is_refused(started: Started) -> None:
    token = signed(EC_KEY, "ES256", "ec-1", issuer="https://elsewhere.test/", scopes=[SCOPE])
    async with started() as (_, client):
        response = await client.get("/whoami", headers=bearer(token))
    assert_invalid_token(response, "the token is not from the expected issuer (iss)")


async def test_an_unsigned_token_is_refused(started: Started) -> None:
    token = unsigned({"alg": "none", "typ": "JWT"}, claims(scope=SCOPE))
    async with started() as (app, client):
        response = await client.get("/whoami", headers=bearer(token))
        assert verifier(app).stats.tokens_verified == 0
    assert_invalid_token(
        response, "the token's algorithm is not accepted; want ES256, EdDSA, RS256"
    )


async def test_a_token_signed_with_the_public_key_as_a_shared_secret_is_refused(
    started: Started,
) -> None:
    # The classic confusion: HS256, keyed with the provider's public key, which anyone has.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = unsigned({"alg": "HS256", "kid": "rsa-1"}, claims(scope=SCOPE), key=public_pem)
    async with started() as (_, client):
        response = await client.get("/whoami", headers=bearer(token))
    assert_invalid_token(
        response, "the token's algorithm is not accepted; want ES256, EdDSA, RS256"
    )


async def test_a_key_id_the_provider_does_not_publish_is_refused_after_one_fetch(
    started: Started, provider: KeySetServer
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    token = signed(other_key, "ES256", "unknown", issuer=ISSUER, scopes=[SCOPE])
    async with started(auth_jwks_refresh_interval=1) as (_, client):
        assert provider.requests == 1  # at start-up
        await asyncio.sleep(1)
        # Many requests naming the unknown key at once: one fetch for all of them, and none
        # again within the refresh interval, however many more come.
        responses = await asyncio.gather(
            *(client.get("/whoami", headers=bearer(token)) for _ in range(20))
        )
        for response in responses:
            assert_invalid_token(response, "the token's key id is not one of the issuer's keys")
        for _ in range(20):
            await client.get("/whoami", headers=bearer(token))
        assert provider.requests == 2


async def test_a_key_the_provider_adds_is_fetched_when_a_token_names_it(
    started: Started, provider: KeySetServer
) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    token = signed(new_key, "ES256", "ec-2", issuer=ISSUER, scopes=[SCOPE])
    async with started(auth_jwks_refresh_interval=1) as (_, client):
        provider.keys = [*provider.keys, public_jwk(new_key, "ec-2")]
        await asyncio.sleep(1)
        response = await client.get("/whoami", headers=bearer(token))
    assert response.status_code == 200, response.text


async def test_a_huge_token_is_refused_unread(started: Started) -> None:
    token = "a" * 100_000
    async with started() as (app, client):
        response = await client.get("/whoami", headers=bearer(token))
        assert verifier(app).stats.tokens_verified == 0
    assert_invalid_token(response, "the token is too large")


@pytest.mark.parametrize(
    "header",
    ["Basic YWRhOnNlY3JldA==", "Bearer", "Bearer a b", "bearer not-a-jwt"],
    ids=["another scheme", "no token", "two tokens", "not a JWT"],
)
async def test_a_malformed_authorization_header_is_a_401(started: Started, header: str) -> None:
    async with started() as (_, client):
        response = await client.get("/whoami", headers={"authorization": header})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def test_a_provider_down_at_start_means_503s_not_401s(
    started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
    token = signed(EC_KEY, "ES256", "ec-1", issuer=ISSUER, scopes=[SCOPE])
    async with started(auth_jwks_url=nowhere) as (_, client):
        response = await client.get("/whoami", headers=bearer(token))
        metrics = await scrape(client)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] in ("1", "2", "3")
    assert "no keys to check tokens with" in response.json()["detail"]
    assert metrics["access_key_fetch_failures_total"] >= 1
    assert "cannot load the key set" in caplog.text


async def test_keys_load_once_the_provider_answers_again(
    started: Started, provider: KeySetServer
) -> None:
    provider.garbage = b"<html>Service Unavailable</html>"
    token = signed(EC_KEY, "ES256", "ec-1", issuer=ISSUER, scopes=[SCOPE])
    async with started() as (_, client):
        assert (await client.get("/whoami", headers=bearer(token))).status_code == 503
        provider.garbage = None
        # The service keeps trying, a second after the first failure.
        for _ in range(40):
            response = await client.get("/whoami", headers=bearer(token))
            if response.status_code != 503:
                break
            await asyncio.sleep(0.1)
    assert response.status_code == 200, response.text


async def test_an_outage_after_start_keeps_the_keys_already_loaded(
    started: Started, provider: KeySetServer
) -> None:
    token = signed(EC_KEY, "ES256", "ec-1", issuer=ISSUER, scopes=[SCOPE])
    unknown = signed(ED_KEY, "EdDSA", "rotated", issuer=ISSUER, scopes=[SCOPE])
    async with started(auth_jwks_refresh_interval=1, auth_verified_tokens=0) as (_, client):
        provider.garbage = b'{"keys": "not a list"}'
        await asyncio.sleep(1)
        refused = await client.get("/whoami", headers=bearer(unknown))  # a failed fetch
        response = await client.get("/whoami", headers=bearer(token))
        metrics = await scrape(client)
    assert refused.status_code == 401, refused.text
    assert response.status_code == 200, response.text
    assert metrics["access_key_fetch_failures_total"] == 1
    assert metrics["access_keys"] == 3


async def test_no_token_claim_or_key_reaches_a_log_a_metric_or_an_answer(
    started: Started, provider: KeySetServer, caplog: pytest.LogCaptureFixture
) -> None:
    marker = "claim-nobody-may-see"
    good = signed(EC_KEY, "ES256", "ec-1", issuer=ISSUER, scopes=[SCOPE], subject=marker)
    forged_key = ec.generate_private_key(ec.SECP256R1())
    forged = signed(forged_key, "ES256", "ec-1", issuer=ISSUER, scopes=[SCOPE], note=marker)
    expired = signed(EC_KEY, "ES256", "ec-1", issuer=ISSUER, exp=1, note=marker)
    texts = []
    with caplog.at_level(logging.DEBUG):
        async with started(slow_request_ms=0) as (_, client):
            for token in (good, forged, expired, "Bearer " + marker):
                response = await client.get("/whoami", headers=bearer(token))
                if response.status_code != 200:
                    texts.append(response.text + str(response.headers))
            texts.append((await client.get("/metrics")).text)
    texts.append(caplog.text)
    secrets = [good, forged, expired, marker, *(key["x"] for key in provider.keys if "x" in key)]
    for text in texts:
        for secret in secrets:
            assert secret not in text


async def test_a_kept_token_is_refused_once_it_expires(started: Started) -> None:
    async with started(auth_leeway=0) as (_, client):
        # Minted once the service runs: its first request comes well before it expires.
        expires = int(time.time()) + 3
        token = signed(EC_KEY, "ES256", "ec-1", issuer=ISSUER, scopes=[SCOPE], exp=expires)
        assert (await client.get("/whoami", headers=bearer(token))).status_code == 200
        await asyncio.sleep(expires - time.time() + 0.1)
        response = await client.get("/whoami", headers=bearer(token))
    assert_invalid_token(response, "the token has expired")


def test_production_refuses_to_start_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("AUTH_SECRET")
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    assert "ENVIRONMENT=production needs keys to check tokens with: set AUTH_JWKS_URL" in str(
        refused.value
    )


def test_keys_from_the_provider_need_the_issuer_and_never_a_shared_secret() -> None:
    with pytest.raises(ValueError, match="AUTH_JWKS_URL needs AUTH_ISSUER"):
        AccessSettings(auth_jwks_url="https://issuer.test/jwks", auth_secret=None)
    with pytest.raises(ValueError, match="not both"):
        AccessSettings(auth_jwks_url="https://issuer.test/jwks", auth_issuer=ISSUER)
    with pytest.raises(ValueError, match="want an https:// URL"):
        AccessSettings(auth_jwks_url="http://issuer.test/jwks", auth_issuer=ISSUER)


def test_a_short_secret_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_SECRET", "hunter2")
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    assert "AUTH_SECRET=***" in str(refused.value)
    assert "hunter2" not in str(refused.value)


async def test_development_checks_tokens_against_a_secret_of_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    development = AccessSettings(auth_secret=None)
    token = mint_token(development, "ada", [SCOPE])
    secret_file = tmp_path / ".my_service-development-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    app = create_app(
        Settings(database_url=sqlite_file_at_head(tmp_path / "service.db"), auth_secret=None)
    )

    @app.get("/whoami")
    @query_budget(0)
    @access(SCOPE)
    async def whoami(caller: CallerDep) -> str:
        return caller.subject

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.get("/whoami", headers=bearer(token))
    assert response.json() == "ada"
    # Another machine's (or another checkout's) secret is another secret.
    secret_file.write_text("another machine's secret, long enough to be one")
    other = mint_token(development, "ada", [SCOPE])
    assert other != token
