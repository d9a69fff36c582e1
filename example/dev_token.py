"""Mint a bearer token for calling the service in development::

    python dev_token.py                           # every scope the routes ask for
    python dev_token.py --scope items:write --subject ada --minutes 10

It is signed as the service checks tokens without an identity provider: with ``AUTH_SECRET``
when set, or else with this machine's development secret. With ``AUTH_JWKS_URL`` set, tokens
come from your identity provider, and this refuses.
"""

import argparse
import sys
from collections.abc import Callable
from typing import Any

from my_service import AccessSettings, SettingsError, access_of, api_routes, app, mint_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("::")[0].strip())
    parser.add_argument(
        "--scope", action="append", help="a scope to grant, repeatable (default: every scope)"
    )
    parser.add_argument("--subject", default="developer", help="who the token names (sub)")
    parser.add_argument("--minutes", type=float, default=60.0, help="how long it is valid")
    args = parser.parse_args()
    try:
        settings = AccessSettings.from_env()
    except SettingsError as exc:
        sys.exit(str(exc))
    if settings.auth_jwks_url is not None:
        sys.exit("AUTH_JWKS_URL is set: ask your identity provider for a token")
    scopes = args.scope
    if scopes is None:
        scopes = sorted(
            {scope for route in api_routes(app.routes) for scope in _scopes(route.endpoint)}
        )
    print(mint_token(settings, args.subject, scopes, expires_in=args.minutes * 60))


def _scopes(endpoint: Callable[..., Any]) -> frozenset[str]:
    rule = access_of(endpoint)
    return rule.scopes if rule is not None else frozenset()


if __name__ == "__main__":
    main()
