"""Who is asking: API tokens (stored hashed) and Django sessions, for sockets and the API.

Tokens are created and revoked by chat/services.py."""

import hashlib
import hmac
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils import timezone

from chat.errors import forbidden, unauthenticated
from chat.models import ApiToken

TOKEN_PREFIX = "nt_"  # noqa: S105 - a visible marker, not a secret


@dataclass(frozen=True)
class Principal:
    """An authenticated user and, for API clients, the token that authenticated them."""

    user: Any
    token_id: Any = None
    session_key: str | None = None  # for browser sockets: the session that logged them in


def hash_token(raw: str) -> str:
    """Returns the SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def parse_bearer(value: str) -> str:
    """Returns the token of an `Authorization: Bearer <token>` value, or raises 401."""
    scheme, _, raw = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return raw.strip()


def principal_from_token(raw: str) -> Principal:
    """Returns the principal of a raw token; raises 4401 for an unknown or revoked one (sync)."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=hash_token(raw), revoked_at__isnull=True)
        .first()
    )
    if token is None:
        raise unauthenticated("The token is unknown or revoked.")
    if not token.user.is_active:
        raise forbidden()
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return Principal(user=token.user, token_id=token.pk)


def principal_from_session(session: Any) -> Principal:
    """Returns the principal of a Django session; 4401 without a valid login (sync).

    Unlike `django.contrib.auth.get_user`, an inactive user is told apart (4403) from
    a missing login (4401).
    """
    if session is None:
        raise unauthenticated()
    user_id = session.get(SESSION_KEY)
    backend = session.get(BACKEND_SESSION_KEY)
    if user_id is None or backend is None:
        raise unauthenticated()
    user_model = get_user_model()
    user = user_model._default_manager.filter(pk=user_model._meta.pk.to_python(user_id)).first()
    if user is None:
        raise unauthenticated()
    stored_hash = session.get(HASH_SESSION_KEY) or ""
    if not hmac.compare_digest(str(stored_hash), user.get_session_auth_hash()):
        raise unauthenticated("The session has expired; log in again.")
    if not user.is_active:
        raise forbidden()
    return Principal(user=user, session_key=getattr(session, "session_key", None))


def principal_from_session_key(session_key: str) -> Principal:
    """Returns the principal of the stored session `session_key` as it is now; 4401 if it
    is gone (logged out, expired, its key cycled) or its password changed, 4403 if the user
    was deactivated (sync)."""
    engine = import_module(settings.SESSION_ENGINE)
    return principal_from_session(engine.SessionStore(session_key))


def principal_from_scope(scope: dict[str, Any]) -> Principal:
    """Authenticates a WebSocket handshake: the bearer token if present, else the session."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        return principal_from_token(parse_bearer(authorization))
    return principal_from_session(scope.get("session"))


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """Returns one request header of an ASGI scope, decoded, or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
