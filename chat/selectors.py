"""Reads of the chat layer (sync; call through database_sync_to_async from async code)."""

import uuid
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from chat.models import Connection, ConnectionState, Event, Message, Thread
from chat.runevents import EventType


def thread_exists_for(*, thread_id: uuid.UUID, user: Any) -> bool:
    """True if the thread exists and belongs to `user`."""
    return Thread.objects.filter(pk=thread_id, owner=user, is_probe=False).exists()


def thread_get_for(*, thread_id: uuid.UUID, user: Any) -> Thread | None:
    """Returns the user's thread, or None for a missing thread and another user's alike."""
    return Thread.objects.filter(pk=thread_id, owner=user, is_probe=False).first()


def thread_last_seq(*, thread_id: uuid.UUID) -> int:
    """Returns the seq of the thread's latest event (0 before the first)."""
    value = Thread.objects.filter(pk=thread_id).values_list("last_seq", flat=True).first()
    return int(value or 0)


def thread_list(*, user: Any) -> QuerySet[Thread]:
    """Returns the user's threads, the most recently active first."""
    return Thread.objects.filter(owner=user, is_probe=False).order_by("-last_activity")


def thread_messages(*, thread: Thread) -> QuerySet[Message]:
    """Returns the messages of a thread, oldest first."""
    return thread.messages.order_by("created_at")


def open_sockets(*, user: Any) -> int:
    """Counts the user's connected sockets, over every server process."""
    return Connection.objects.filter(user=user, state=ConnectionState.CONNECTED).count()


def messages_in_window(*, user: Any, seconds: float) -> list[Any]:
    """Returns the times of the user's messages in the last `seconds`, oldest first."""
    since = timezone.now() - timedelta(seconds=seconds)
    return list(
        Message.objects.filter(thread__owner=user, role=Message.Role.USER, created_at__gte=since)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )


def thread_resume_seq(*, thread: Thread) -> int:
    """The seq a freshly rendered chat page resumes after: the thread's last seq, or, while
    a run is open, the seq before its `agent_started`, so that the page redraws that run."""
    started = (
        Event.objects.filter(thread=thread, type=EventType.AGENT_STARTED, seq__lte=thread.last_seq)
        .order_by("-seq")
        .values_list("seq", "run_id")
        .first()
    )
    if started is None:
        return thread.last_seq
    seq, run_id = started
    ended = Event.objects.filter(
        thread=thread, run_id=run_id, type=EventType.AGENT_COMPLETED, seq__lte=thread.last_seq
    ).exists()
    return thread.last_seq if ended else seq - 1


def run_first_seq(*, thread_id: uuid.UUID, run_id: uuid.UUID) -> int | None:
    """The seq of a run's first logged event, or None before it has one."""
    seq = (
        Event.objects.filter(thread_id=thread_id, run_id=run_id)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    return None if seq is None else int(seq)
