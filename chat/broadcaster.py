"""The broadcaster: log an event, then notify the thread's sockets over the channel layer."""

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import DatabaseError

from chat import metrics
from chat.errors import report_exception
from chat.events import event_append
from chat.protocol import encode

logger = logging.getLogger("netra.broadcaster")


class EventLogError(RuntimeError):
    """The event log could not be written; chained to the database's exception."""


def thread_group(thread_id: uuid.UUID | str) -> str:
    """Returns the channel-layer group of a thread's sockets."""
    return f"thread.{thread_id}"


def token_group(token_id: uuid.UUID | str) -> str:
    """Returns the group of the sockets an API token opened (closed when it is revoked)."""
    return f"token.{token_id}"


class Broadcaster:
    """Emits run events: the log write first (it raises), then the group send (it may fail)."""

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER) -> None:
        self.alias = alias
        self._append = database_sync_to_async(event_append)

    @property
    def channel_layer(self) -> Any:
        """The configured layer, looked up each time so that a settings change is followed."""
        return get_channel_layer(self.alias)

    async def emit(
        self,
        *,
        thread_id: uuid.UUID,
        run_id: uuid.UUID,
        type: str,
        data: dict[str, Any],
        in_transaction: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Appends the event to the log and sends it to the thread's group; returns it.

        A failed log write raises (the run fails loudly). A failed send is logged and
        counted, and the sockets take the event from the log by gap fill.
        """
        try:
            event = await self._append(
                thread_id=thread_id,
                run_id=run_id,
                type=type,
                data=data,
                in_transaction=in_transaction,
            )
        except DatabaseError as exc:
            raise EventLogError(
                f"could not log {type} of run {run_id} in thread {thread_id}: {exc}"
            ) from exc
        metrics.EVENTS_EMITTED.labels(type=type).inc()
        await self.notify(event)
        return event

    async def notify(self, event: dict[str, Any]) -> None:
        """Sends a logged event to its thread's group; failures are logged and counted."""
        message = {
            "type": "thread.event",
            "seq": event["seq"],
            "event_type": event["type"],
            "text": encode(event),
            "emitted_at": time.time(),
        }
        try:
            await self.channel_layer.group_send(thread_group(event["thread_id"]), message)
        except Exception as exc:  # noqa: BLE001 - the event is logged; sockets gap-fill from it
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_send").inc()
            report_exception(
                exc,
                "group_send failed; sockets will fill the gap from the log",
                thread_id=event["thread_id"],
                run_id=event["run_id"],
                seq=event["seq"],
            )
