"""``traffic.override_header``: a request that names its variant, for testing on purpose.

QA and on-call engineers reach the challenger (or the champion) by sending the configured
header with the variant (``champion``, ``challenger``, a listed challenger's name) or the name
the YAML serves it under. Such a request is served by that variant alone and logged as forced,
which keeps it out of every statistic. With ``traffic.override_requires_token`` the header
only counts alongside the admin bearer token; without a valid one it is ignored and the request
is routed as usual, so that a client who learns the header's name cannot steer its own traffic.
"""

from __future__ import annotations

import hmac
import os

from router.errors import InputValidationError
from router.serving.snapshot import Snapshot
from router.strings import header_text

TOKEN_ENV = "ROUTER_ADMIN_TOKEN"


def admin_token() -> str:
    """The admin bearer token, or "" when there is none: a blank or whitespace-only value is
    no token, since no request could present it."""
    return os.environ.get(TOKEN_ENV, "").strip()


def bearer_token_matches(authorization: str) -> bool:
    """True when ``authorization`` is ``Bearer $ROUTER_ADMIN_TOKEN`` and the variable is set."""
    token = admin_token()
    scheme, _, given = authorization.partition(" ")
    # compare_digest: the time taken must not reveal how much of a guess was right.
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode())


def served_variant(snapshot: Snapshot, named: str, field: str) -> str:
    """The variant (champion, challenger, or a listed challenger's name) that ``named`` names:
    a variant or a served model's name; anything else is a 422 naming ``field`` and what it
    could have been."""
    roles = snapshot.variants
    for role in roles:
        if named.strip().lower() == role or named == snapshot.names[role]:
            return role
    choices = ", ".join(dict.fromkeys([*roles, *(snapshot.names[r] for r in roles)]))
    raise InputValidationError(
        f"{field} names no served variant: {named!r} (one of {choices})",
        [{"field": field, "message": f"expected one of {choices}", "got": named}])


def forced_variant(snapshot: Snapshot, headers: dict[bytes, bytes]) -> str | None:
    """The variant the request's override header names, or None (no header, header off, or
    a token required and not given)."""
    traffic = snapshot.config.traffic
    if traffic.override_header is None:
        return None
    raw = headers.get(traffic.override_header.encode("latin-1"))
    if raw is None:
        return None
    if traffic.override_requires_token and not bearer_token_matches(
            headers.get(b"authorization", b"").decode("latin-1")):
        return None
    return served_variant(snapshot, header_text(raw), f"header {traffic.override_header}")
