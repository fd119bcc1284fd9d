"""Failure classification: every upstream failure becomes an AgentFailure with a typed
code, an outcome of netra_llm_requests_total and whether a retry may help."""

import json
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import openai

from agents.errors import AgentFailure
from agents.providers.openai_compat.config import ProviderConfig
from agents.providers.openai_compat.context import context_exceeded
from chat import metrics

DETAIL_LIMIT = 300
# How servers say a request is longer than the context window: OpenAI and llama-cpp-python
# (code context_length_exceeded, "maximum context length"), vLLM ("maximum context
# length"), llama.cpp's llama-server ("exceeds the available context size").
CONTEXT_ERROR = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|exceed_context|too many tokens",
    re.IGNORECASE,
)
# How servers say the request itself is malformed (pydantic / FastAPI validation,
# OpenAI's invalid_request_error): a retry would send the same request and fail again.
VALIDATION_ERROR = re.compile(
    r"validation error|Input should be|Field required|invalid_request_error|"
    r"'loc': \(|\"loc\":",
    re.IGNORECASE,
)
# The outcomes of netra_llm_requests_total; they start at 0, so that increase() sees the
# first failure of a process.
OUTCOMES = (
    "ok",
    "length",
    "content_filter",
    "unavailable",
    "auth",
    "rate_limited",
    "server_error",
    "rejected",
    "stream_error",
    "incomplete",
    "context_exceeded",
    "timeout",
    "cancelled",
)
for _outcome in OUTCOMES:
    metrics.LLM_REQUESTS.labels(outcome=_outcome)


def retry_delay(
    headers: Any, *, attempt: int, base: float, max_wait: float, now: datetime | None = None
) -> float | None:
    """Returns the seconds to wait before retry `attempt` (0-based): the server's
    Retry-After (or retry-after-ms) when it sends one, else exponential backoff with
    jitter. None when the server asks for longer than `max_wait`: waiting that long
    would hold the run, so it fails at once instead."""
    asked: float | None = None
    millis = headers.get("retry-after-ms") if headers is not None else None
    value = headers.get("retry-after") if headers is not None else None
    if millis:
        try:
            asked = float(millis) / 1000
        except ValueError:
            asked = None
    if asked is None and value:
        try:
            asked = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                asked = (when - (now or datetime.now(UTC))).total_seconds()
    if asked is not None:
        asked = max(0.0, asked)
        return asked if asked <= max_wait else None
    backoff = min(max_wait, base * 2**attempt)
    return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


def _caused_by_connect(exc: BaseException) -> bool:
    # httpx raises ConnectTimeout / ConnectError under the client's own exceptions; the
    # class names are the stable part across httpx packagings.
    seen: BaseException | None = exc.__cause__ or exc.__context__
    while seen is not None:
        if type(seen).__name__ in ("ConnectTimeout", "ConnectError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _detail(exc: openai.APIError, config: ProviderConfig) -> str:
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
    text = str(message) if message else exc.message
    text = config.redact(" ".join(text.split()))
    return text[:DETAIL_LIMIT]


def _body_text(exc: openai.APIError) -> str:
    body = exc.body
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return f"{exc.message} {text}"


def classify(
    exc: openai.APIError, config: ProviderConfig, *, mid_answer: bool = False
) -> tuple[str, AgentFailure, bool]:
    """Maps a client error to (metric outcome, failure, whether a retry may help);
    `mid_answer` when part of the answer had already streamed."""
    if isinstance(exc, openai.APITimeoutError) and not _caused_by_connect(exc):
        return "timeout", llm_timeout(config.request_timeout), False
    if isinstance(exc, openai.APIConnectionError) and mid_answer:
        return (
            "unavailable",
            AgentFailure(
                "llm_unavailable",
                "The model server dropped the connection mid-answer; the partial answer is "
                "kept. Try again.",
                retryable=True,
            ),
            False,
        )
    if isinstance(exc, openai.APIConnectionError):
        return (
            "unavailable",
            AgentFailure(
                "llm_unavailable",
                "The model server could not be reached; try again shortly.",
                retryable=True,
            ),
            True,
        )
    if isinstance(exc, openai.APIStatusError):
        return _classify_status(exc, config)
    return (
        "stream_error",
        AgentFailure(
            "llm_error",
            f"The model server reported an error: {_detail(exc, config)}",
            retryable=True,
        ),
        False,
    )


def _classify_status(
    exc: openai.APIStatusError, config: ProviderConfig
) -> tuple[str, AgentFailure, bool]:
    """Maps an HTTP error status of the model server (see classify)."""
    status = exc.status_code
    if status in (401, 403):
        return (
            "auth",
            AgentFailure(
                "llm_auth",
                f"The model server refused the credentials (HTTP {status}); "
                "an operator must check OPENAI_API_KEY.",
                retryable=False,
            ),
            False,
        )
    body = _body_text(exc)
    if CONTEXT_ERROR.search(body):
        return "context_exceeded", context_exceeded(), False
    if status == 429:
        return (
            "rate_limited",
            AgentFailure(
                "llm_rate_limited",
                "The model server is rate limiting requests; try again in a minute.",
                retryable=True,
            ),
            True,
        )
    if status >= 500 and not VALIDATION_ERROR.search(body):
        return (
            "server_error",
            AgentFailure("llm_error", f"The model server failed (HTTP {status}).", retryable=True),
            True,
        )
    return (
        "rejected",
        AgentFailure(
            "llm_error",
            f"The model server rejected the request (HTTP {status}): {_detail(exc, config)}",
            retryable=False,
        ),
        False,
    )


def llm_timeout(seconds: float, *, idle: bool = False) -> AgentFailure:
    """Returns the failure of a model call that took too long or stalled."""
    what = "sent nothing for" if idle else "did not finish within"
    return AgentFailure("llm_timeout", f"The model server {what} {seconds:g} s.", retryable=True)


FINISH_FAILURES = {
    "length": (
        "llm_length",
        "The model's answer was cut off at its output limit; the partial answer is kept.",
    ),
    "content_filter": (
        "llm_content_filter",
        "The model server's content filter stopped the answer; the partial answer is kept.",
    ),
}


def incomplete_stream() -> AgentFailure:
    """Returns the failure of a stream that ended without a finish reason: the answer
    is not known to be whole, so the run must not complete as if it were."""
    return AgentFailure(
        "llm_error",
        "The model server ended the answer without finishing it (no finish reason); "
        "the partial answer is kept. Try again.",
        retryable=True,
    )


def empty_stream() -> AgentFailure:
    """Returns the failure of a stream that ended before any answer came."""
    return AgentFailure(
        "llm_error",
        "The model server ended the answer before sending any of it (no finish reason). Try again.",
        retryable=True,
    )
