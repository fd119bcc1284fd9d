"""Writes of the chat layer: threads, users and tokens."""

from typing import Any

from chat.events import isoformat
from chat.models import Thread

MAX_TITLE = 200


def thread_create(*, owner: Any, title: str = "") -> Thread:
    """Creates a thread for `owner`."""
    return Thread.objects.create(owner=owner, title=title.strip()[:MAX_TITLE])


def thread_to_json(thread: Thread) -> dict[str, Any]:
    """Returns the API representation of a thread."""
    return {
        "id": str(thread.id),
        "title": thread.title,
        "created_at": isoformat(thread.created_at),
        "last_activity": isoformat(thread.last_activity),
        "last_seq": thread.last_seq,
    }
