"""The one application error type, and how a failure is reported."""

import logging
import time
from typing import Any

import sentry_sdk

logger = logging.getLogger("netra")


class NetraError(Exception):
    """A failure with a name: a wire `code`, a message, an HTTP status and a close code."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        close_code: int | None = None,
        retry_after: float | None = None,
        ref: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.close_code = close_code
        self.retry_after = retry_after
        self.ref = ref

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
        """Returns the JSON body of the HTTP API."""
        return {"error": {"code": self.code, "message": self.message}}


# Close codes and their error codes (DESIGN section 4).
CLOSE_PROTOCOL_ERROR = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_THREAD_NOT_FOUND = 4404
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_RATE_LIMITED = 4429
CLOSE_INTERNAL_ERROR = 4500
CLOSE_UNAVAILABLE = 4503


def unauthenticated(message: str = "No valid session or token.") -> NetraError:
    """Returns the 4401 refusal."""
    return NetraError("unauthenticated", message, status=401, close_code=CLOSE_UNAUTHENTICATED)


def forbidden(message: str = "This account may not connect.") -> NetraError:
    """Returns the 4403 refusal."""
    return NetraError("forbidden", message, status=403, close_code=CLOSE_FORBIDDEN)


def thread_not_found() -> NetraError:
    """Returns the 4404 answer, the same for a missing thread and another user's."""
    return NetraError(
        "thread_not_found", "No such thread.", status=404, close_code=CLOSE_THREAD_NOT_FOUND
    )


def auth_timeout() -> NetraError:
    """Returns the 4408 refusal."""
    return NetraError(
        "auth_timeout",
        "Authentication did not finish in time; retry.",
        status=503,
        close_code=CLOSE_AUTH_TIMEOUT,
    )


def unavailable(message: str = "A dependency is unavailable; retry shortly.") -> NetraError:
    """Returns the 4503 answer for a dependency that is down."""
    return NetraError("unavailable", message, status=503, close_code=CLOSE_UNAVAILABLE)


def rate_limited(message: str, *, retry_after: float, close_code: int | None = None) -> NetraError:
    """Returns the 429 answer; with a close code for a socket over its limit."""
    return NetraError(
        "rate_limited", message, status=429, close_code=close_code, retry_after=retry_after
    )


def internal_error(ref: str | None = None) -> NetraError:
    """Returns the 4500 answer for a server fault."""
    return NetraError(
        "internal_error",
        "Server fault; it has been logged. Reconnect to resume.",
        status=500,
        close_code=CLOSE_INTERNAL_ERROR,
        ref=ref,
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
