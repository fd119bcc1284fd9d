"""Sentry start-up: Django and asyncio integrations, no secrets or message text sent."""

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.asyncio import AsyncioIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.openai import OpenAIIntegration

SENSITIVE_KEYS = {
    "authorization",
    "cookie",
    "set-cookie",
    "x-health-token",
    "token",
    "password",
    "sessionid",
    "csrftoken",
    "api_key",
    "secret",
}
TEXT_KEYS = {"text", "message_text", "user_text", "args"}
BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
TOKEN_LIKE = re.compile(r"\b(?:nt|sk)[_-][A-Za-z0-9_-]{20,}")  # ours, and provider API keys
REDACTED = "[redacted]"


def _scrub(value: Any, *, send_text: bool) -> Any:
    if isinstance(value, dict):
        cleaned: dict[Any, Any] = {}
        for key, item in value.items():
            lowered = str(key).lower()
            if lowered in SENSITIVE_KEYS or (not send_text and lowered in TEXT_KEYS):
                cleaned[key] = REDACTED
            else:
                cleaned[key] = _scrub(item, send_text=send_text)
        return cleaned
    if isinstance(value, list | tuple):
        return [_scrub(item, send_text=send_text) for item in value]
    if isinstance(value, str):
        return TOKEN_LIKE.sub(REDACTED, BEARER.sub(r"\1" + REDACTED, value))
    return value


def make_before_send(*, send_message_text: bool) -> Any:
    """Returns a before_send hook that drops tokens, cookies and (by default) message text."""

    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        request = event.get("request")
        if isinstance(request, dict):
            request.pop("cookies", None)
            request.pop("data", None)
        scrubbed: dict[str, Any] = _scrub(event, send_text=send_message_text)
        return scrubbed

    return before_send


def init_sentry(*, dsn: str, send_message_text: bool, transport: Any = None) -> None:
    """Starts sentry-sdk for this process."""
    options: dict[str, Any] = {
        "dsn": dsn,
        "integrations": [
            DjangoIntegration(),
            AsyncioIntegration(),
            LoggingIntegration(event_level=None),
        ],
        # sentry-sdk enables its OpenAI integration by itself when the package is installed;
        # it would send every failed model request (unreachable, refused key, 5xx) as an
        # unhandled error, while the provider types those as expected run failures.
        "disabled_integrations": [OpenAIIntegration()],
        # Frame locals would carry message text and tokens; the chained tracebacks suffice.
        "include_local_variables": False,
        "before_send": make_before_send(send_message_text=send_message_text),
        "traces_sample_rate": 0.0,
    }
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(**options)
