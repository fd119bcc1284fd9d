"""Structured logging: one JSON object per line when LOG_FORMAT=json."""

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
