"""Reads of the chat layer (sync; call through database_sync_to_async from async code)."""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Min, Q, QuerySet
from django.utils import timezone

from chat.models import Connection, ConnectionState, Event, Message, Thread
from chat.runevents import EventType

# The messages a chat page draws at first; older ones load when the reader scrolls up.
HISTORY_PAGE = 40


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


def thread_list(*, user: Any, query: str = "") -> QuerySet[Thread]:
    """Returns the user's threads, the most recently active first; with `query`, only those
    whose title contains it (case-insensitive)."""
    threads = Thread.objects.filter(owner=user, is_probe=False)
    if query.strip():
        threads = threads.filter(title__icontains=query.strip())
    return threads.order_by("-last_activity")


def thread_messages(*, thread: Thread) -> QuerySet[Message]:
    """Returns the messages of a thread, oldest first."""
    return thread.messages.order_by("created_at")


@dataclass(frozen=True)
class HistoryPage:
    """One page of a thread's messages, oldest first, and where their runs' events begin:
    the events with seq in (events_after_seq, up to the newer page or the resume seq] draw
    these messages' run timelines (None: no run of the page is in the event log)."""

    messages: list[Message]
    has_more: bool
    events_after_seq: int | None


def thread_history(
    *, thread: Thread, before: uuid.UUID | None = None, limit: int = HISTORY_PAGE
) -> HistoryPage:
    """The last `limit` messages of the thread (before the message `before`, if given)."""
    query = thread.messages.all()
    if before is not None:
        pivot = thread.messages.filter(pk=before).values_list("created_at", flat=True).first()
        if pivot is None:
            return HistoryPage(messages=[], has_more=False, events_after_seq=None)
        # (created_at, id) orders the pages: messages saved in the same clock tick are
        # neither skipped nor repeated at a page's edge.
        query = query.filter(Q(created_at__lt=pivot) | Q(created_at=pivot, pk__lt=before))
    newest_first = list(query.order_by("-created_at", "-pk")[: limit + 1])
    messages = newest_first[:limit][::-1]
    run_ids = {m.run_id for m in messages if m.run_id is not None}
    first = (
        Event.objects.filter(thread=thread, run_id__in=run_ids, type=EventType.AGENT_STARTED)
        .aggregate(first=Min("seq"))
        .get("first")
        if run_ids
        else None
    )
    return HistoryPage(
        messages=messages,
        has_more=len(newest_first) > limit,
        events_after_seq=None if first is None else int(first) - 1,
    )


# The states of a socket that counts against WS_MAX_SOCKETS_PER_USER: admitted by the
# handshake (chat.connections.ConnectionTracker.register) and not yet closing.
OPEN_STATES = (ConnectionState.AUTHENTICATING, ConnectionState.CONNECTED)


def open_sockets(*, user_id: Any) -> int:
    """Counts the user's open sockets (OPEN_STATES), over every server process."""
    return Connection.objects.filter(user_id=user_id, state__in=OPEN_STATES).count()


def nth_newest_message_at(*, user: Any, seconds: float, n: int) -> Any:
    """The time of the user's n-th newest message of the last `seconds`, or None if they
    sent fewer than n then (one indexed row, however many they sent)."""
    since = timezone.now() - timedelta(seconds=seconds)
    rows = (
        Message.objects.filter(thread__owner=user, role=Message.Role.USER, created_at__gte=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[n - 1 : n]
    )
    return next(iter(rows), None)


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
