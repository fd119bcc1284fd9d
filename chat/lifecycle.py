"""Deleting a thread: its active runs are cancelled first, then its messages, runs, events
(approvals live in the events) go in one transaction, and its open sockets on every
worker are closed with 4404. The connection state log keeps its rows; their thread
reference is cleared (Connection.thread is SET_NULL)."""

import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chat import metrics, selectors
from chat.broadcaster import thread_group
from chat.errors import report_exception, thread_not_found
from chat.models import Event, Thread
from chat.ports import agent_service

logger = logging.getLogger("netra.lifecycle")


def thread_delete_rows(*, thread_id: uuid.UUID, user: Any) -> dict[str, int] | None:
    """Deletes the user's thread with everything in it; None if it is not theirs (sync).

    The thread row is locked first: an event append takes that row's lock too, so one
    racing the delete either commits before it (and is deleted with it) or finds no thread
    afterwards (ThreadGoneError: the run stops without writing an orphan event).
    """
    with transaction.atomic():
        thread = (
            Thread.objects.select_for_update()
            .filter(pk=thread_id, owner=user, is_probe=False)
            .first()
        )
        if thread is None:
            return None
        events, _ = Event.objects.filter(thread=thread).delete()
        _, by_model = thread.delete()
    return {"events": events, **{label: n for label, n in by_model.items() if n}}


async def run_thread_delete(*, thread_id: uuid.UUID, user: Any) -> dict[str, int]:
    """Deletes the user's thread (raises thread_not_found for anyone else's): cancels its
    active runs and waits up to THREAD_DELETE_CANCEL_WAIT for them to end, deletes it, and
    closes its sockets on every worker with 4404. Returns the deleted rows per model."""
    if not await database_sync_to_async(selectors.thread_exists_for)(
        thread_id=thread_id, user=user
    ):
        raise thread_not_found()
    service = agent_service()
    if service is not None:
        still_active = await service.stop_thread_runs(
            thread_id=thread_id, wait=settings.THREAD_DELETE_CANCEL_WAIT
        )
        if still_active:
            logger.warning(
                "deleting a thread whose runs did not end in time; each stops at its next "
                "event, which finds no thread",
                extra={"thread_id": thread_id, "run_ids": [str(r) for r in still_active]},
            )
    deleted = await database_sync_to_async(thread_delete_rows)(thread_id=thread_id, user=user)
    if deleted is None:  # deleted meanwhile by another request
        raise thread_not_found()
    logger.info("thread deleted", extra={"thread_id": thread_id, "deleted": deleted})
    await close_thread_sockets(thread_id=thread_id)
    return deleted


async def close_thread_sockets(*, thread_id: uuid.UUID) -> None:
    """Tells the thread's sockets, on every worker, to close with 4404."""
    try:
        await get_channel_layer().group_send(thread_group(thread_id), {"type": "thread.deleted"})
    except Exception as exc:  # noqa: BLE001 - the thread is gone; its sockets' next command fails
        metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_send").inc()
        report_exception(
            exc, "could not close the sockets of a deleted thread", thread_id=thread_id
        )
