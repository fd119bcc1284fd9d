"""Structured logging: one JSON object per line when LOG_FORMAT=json; client errors logged
as client errors."""

import json
import logging
from datetime import UTC, datetime

CONTEXT_FIELDS = (
    "connection_id",
    "thread_id",
    "run_id",
    "user_id",
    "from_state",
    "to_state",
    "reason",
    "close_code",
    "code",
    "tool",
    "tool_call_id",
    "seq",
    "worker_id",
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with the ids it carries in `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        """Returns the record as a JSON object on one line."""
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                payload[field] = str(value) if not isinstance(value, int | float) else value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


class ClientErrorFilter(logging.Filter):
    """Logs what a client got wrong as a WARNING without a traceback: Django's
    `django.security.*` records (a bad Host header, an oversized body: logged at ERROR with
    the exception) and its 4xx `django.request` records. Server faults stay ERROR with their
    traceback (and go to Sentry, which hears of no client error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Lowers a client error to WARNING and drops its traceback; passes every record."""
        client_error = record.name.startswith("django.security.") or (
            record.name == "django.request" and record.levelno < logging.ERROR
        )
        if client_error:
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
            record.exc_info = None
            record.exc_text = None
        return True
