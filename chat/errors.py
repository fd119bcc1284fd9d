"""The one application error type, every wire error code, and how a failure is reported."""

import logging
import time
from enum import StrEnum
from typing import Any

import sentry_sdk

logger = logging.getLogger("netra")


class ErrorCode(StrEnum):
    """Every error code the product puts on the wire (docs/protocol.md), listed once."""

    # Socket refusals and closes, each with its close code.
    PROTOCOL_ERROR = "protocol_error"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    THREAD_NOT_FOUND = "thread_not_found"
    NOT_FOUND = "not_found"  # a socket path that is no endpoint (4404)
    AUTH_TIMEOUT = "auth_timeout"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    # Answers to one client frame or HTTP request.
    BAD_REQUEST = "bad_request"
    RUN_IN_PROGRESS = "run_in_progress"
    RUN_NOT_ACTIVE = "run_not_active"
    RUN_NOT_FOUND = "run_not_found"
    UNKNOWN_AGENT = "unknown_agent"  # POST /api/threads/ naming no configured agent
    APPROVAL_NOT_FOUND = "approval_not_found"  # a missing approval and another user's alike
    APPROVAL_RESOLVED = "approval_resolved"  # a second answer to an approval
    # HTTP only.
    CSRF_FAILED = "csrf_failed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # `agent_error` of a run (besides internal_error and unavailable).
    WORKER_LOST = "worker_lost"
    WORKER_SHUTDOWN = "worker_shutdown"
    AGENT_UNAVAILABLE = "agent_unavailable"  # the thread's agent is no longer configured
    MAX_STEPS = "max_steps"
    LLM_AUTH = "llm_auth"
    LLM_CONTENT_FILTER = "llm_content_filter"
    LLM_CONTEXT_EXCEEDED = "llm_context_exceeded"
    LLM_ERROR = "llm_error"
    LLM_LENGTH = "llm_length"
    LLM_MISCONFIGURED = "llm_misconfigured"
    LLM_RATE_LIMITED = "llm_rate_limited"
    LLM_TIMEOUT = "llm_timeout"
    LLM_UNAVAILABLE = "llm_unavailable"
    # `tool_completed.error` set by the runtime (a tool of your own may add codes of its own).
    UNKNOWN_TOOL = "unknown_tool"
    BAD_ARGUMENTS = "bad_arguments"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    TOOL_CRASHED = "tool_crashed"
    BAD_RESULT = "bad_result"
    INTERRUPTED = "interrupted"
    DENIED = "denied"  # the user denied an approval (the message is their comment)
    APPROVAL_EXPIRED = "approval_expired"  # nobody answered within APPROVAL_TIMEOUT
    # `tool_completed.error` of the built-in tools.
    BAD_EXPRESSION = "bad_expression"
    DIVISION_BY_ZERO = "division_by_zero"
    TOO_LARGE = "too_large"


class NetraError(Exception):
    """A failure with a name: a wire `code`, a message, an HTTP status and a close code.

    Immutable: a variant (the same error naming the frame it answers) is a copy made by
    `with_ref()` or `without_close()`.
    """

    code: ErrorCode
    message: str
    status: int
    close_code: int | None
    retry_after: float | None
    ref: str | None

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int = 400,
        close_code: int | None = None,
        retry_after: float | None = None,
        ref: str | None = None,
    ) -> None:
        super().__init__(message)
        for name, value in (
            ("code", ErrorCode(code)),
            ("message", message),
            ("status", status),
            ("close_code", close_code),
            ("retry_after", retry_after),
            ("ref", ref),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELDS:
            raise AttributeError(f"NetraError is immutable; use a copy method, not .{name} =")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if name in _FIELDS:
            raise AttributeError(f"NetraError is immutable; .{name} cannot be deleted")
        super().__delattr__(name)

    def _copy(self, **changes: Any) -> "NetraError":
        fields: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        fields.update(changes)
        return NetraError(fields.pop("code"), fields.pop("message"), **fields)

    def with_ref(self, ref: str | None) -> "NetraError":
        """Returns a copy that names the client frame or request it answers."""
        return self._copy(ref=ref)

    def without_close(self) -> "NetraError":
        """Returns a copy without a close code: an answer after which the socket stays."""
        return self._copy(close_code=None)

    def frame(self) -> dict[str, Any]:
        """Returns the `error` frame of the WebSocket protocol."""
        frame: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.close_code is not None:
            frame["close_code"] = self.close_code
        if self.retry_after is not None:
            frame["retry_after"] = self.retry_after
        if self.ref is not None:
            frame["ref"] = self.ref
        return frame

    def body(self) -> dict[str, Any]:
        """Returns the JSON body of the HTTP API: `{"error": {"code", "message", "ref"?}}`."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.ref is not None:
            error["ref"] = self.ref
        return {"error": error}


_FIELDS = ("code", "message", "status", "close_code", "retry_after", "ref")


# Close codes and their error codes (docs/protocol.md).
CLOSE_PROTOCOL_ERROR = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_THREAD_NOT_FOUND = 4404
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_RATE_LIMITED = 4429
CLOSE_INTERNAL_ERROR = 4500
CLOSE_UNAVAILABLE = 4503


def protocol_error(message: str) -> NetraError:
    """Returns the 4400 close for a client that keeps breaking the protocol."""
    return NetraError(ErrorCode.PROTOCOL_ERROR, message, close_code=CLOSE_PROTOCOL_ERROR)


def unauthenticated(message: str = "No valid session or token.") -> NetraError:
    """Returns the 4401 refusal."""
    return NetraError(
        ErrorCode.UNAUTHENTICATED, message, status=401, close_code=CLOSE_UNAUTHENTICATED
    )


def forbidden(message: str = "This account may not connect.") -> NetraError:
    """Returns the 4403 refusal."""
    return NetraError(ErrorCode.FORBIDDEN, message, status=403, close_code=CLOSE_FORBIDDEN)


def thread_not_found() -> NetraError:
    """Returns the 4404 answer, the same for a missing thread and another user's."""
    return NetraError(
        ErrorCode.THREAD_NOT_FOUND, "No such thread.", status=404, close_code=CLOSE_THREAD_NOT_FOUND
    )


def auth_timeout() -> NetraError:
    """Returns the 4408 refusal."""
    return NetraError(
        ErrorCode.AUTH_TIMEOUT,
        "Authentication did not finish in time; retry.",
        status=503,
        close_code=CLOSE_AUTH_TIMEOUT,
    )


def unavailable(message: str = "A dependency is unavailable; retry shortly.") -> NetraError:
    """Returns the 4503 answer for a dependency that is down."""
    return NetraError(ErrorCode.UNAVAILABLE, message, status=503, close_code=CLOSE_UNAVAILABLE)


def rate_limited(message: str, *, retry_after: float, close_code: int | None = None) -> NetraError:
    """Returns the 429 answer; with a close code for a socket over its limit."""
    return NetraError(
        ErrorCode.RATE_LIMITED, message, status=429, close_code=close_code, retry_after=retry_after
    )


def internal_error(ref: str | None = None) -> NetraError:
    """Returns the 4500 answer for a server fault."""
    return NetraError(
        ErrorCode.INTERNAL_ERROR,
        "Server fault; it has been logged. Reconnect to resume.",
        status=500,
        close_code=CLOSE_INTERNAL_ERROR,
        ref=ref,
    )


def bad_request(message: str, ref: str | None = None) -> NetraError:
    """Returns the answer to an invalid client frame or request body (the socket stays open)."""
    return NetraError(ErrorCode.BAD_REQUEST, message, status=400, ref=ref)


def run_in_progress() -> NetraError:
    """Returns the answer to a second message while a run is active on the thread."""
    return NetraError(
        ErrorCode.RUN_IN_PROGRESS,
        "A run is active on this thread; wait for it to finish or cancel it.",
        status=409,
    )


def run_not_active() -> NetraError:
    """Returns the answer to cancelling a run that is not active."""
    return NetraError(ErrorCode.RUN_NOT_ACTIVE, "That run is not active.", status=409)


def unknown_agent(name: str, configured: list[str]) -> NetraError:
    """Returns the answer to a thread asked of an agent that is not configured."""
    return NetraError(
        ErrorCode.UNKNOWN_AGENT,
        f"There is no agent named {name!r}; configured: {', '.join(configured) or 'none'}.",
    )


def run_not_found() -> NetraError:
    """Returns the answer for a missing run and another user's alike."""
    return NetraError(ErrorCode.RUN_NOT_FOUND, "No such run.", status=404)


def approval_not_found() -> NetraError:
    """Returns the answer for a missing approval and another user's alike."""
    return NetraError(ErrorCode.APPROVAL_NOT_FOUND, "No such approval.", status=404)


def approval_resolved() -> NetraError:
    """Returns the answer to an approval that was answered already (or expired)."""
    return NetraError(
        ErrorCode.APPROVAL_RESOLVED, "This approval has been answered already.", status=409
    )


# Outages hit every event or socket at once; Sentry hears of each kind once a minute.
SENTRY_THROTTLE_SECONDS = 60.0
_last_sent: dict[str, float] = {}


def report_exception(
    exc: BaseException, message: str, *, throttle: str | None = None, **context: Any
) -> None:
    """Logs an unexpected exception with its traceback and context and sends it to Sentry
    once. With `throttle`, Sentry gets at most one event of that kind a minute (the log and
    the metrics still see every one)."""
    logger.error(
        "%s: %s",
        message,
        exc,
        exc_info=exc,
        extra={k: v for k, v in context.items() if v is not None},
    )
    if throttle is not None:
        now = time.monotonic()
        if now - _last_sent.get(throttle, -SENTRY_THROTTLE_SECONDS) < SENTRY_THROTTLE_SECONDS:
            return
        _last_sent[throttle] = now
    with sentry_sdk.new_scope() as scope:
        for key, value in context.items():
            if value is not None:
                scope.set_tag(key, str(value))
        sentry_sdk.capture_exception(exc)
