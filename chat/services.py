"""Writes of the chat layer: threads, users and tokens."""

from typing import Any

from chat.models import Thread

MAX_TITLE = 200


def thread_create(*, owner: Any, title: str = "") -> Thread:
    """Creates a thread for `owner`."""
    return Thread.objects.create(owner=owner, title=title.strip()[:MAX_TITLE])
