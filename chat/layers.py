"""Which channel layer carries what.

The default layer (CHANNEL_LAYERS['default']) carries each socket's own channel and the
control messages that close sockets: a revoked token, a logout, a draining worker, a
deleted thread. Channels-redis' core layer keeps those in Redis while a receiver
reconnects. Thread events may go by a layer of their own, CHANNEL_LAYERS['events']
(on Redis: channels-redis' pub/sub layer, unless REDIS_EVENTS_LAYER=core): one PUBLISH per
event instead of the core layer's script and round trips. What pub/sub loses (what is
published while it reconnects) the sockets fill from the log, as they do for what the
core layer drops at capacity (chat/delivery.py).
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

EVENTS_ALIAS = "events"

Receive = Callable[[], Awaitable[dict[str, Any]]]


def events_alias() -> str:
    """The alias of the layer that carries thread events."""
    return EVENTS_ALIAS if EVENTS_ALIAS in settings.CHANNEL_LAYERS else DEFAULT_CHANNEL_LAYER


def events_layer() -> Any:
    """The layer that carries thread events (the default one unless 'events' is set)."""
    return get_channel_layer(events_alias())


def has_events_layer() -> bool:
    """Whether thread events have a layer of their own (chat/router.py receives them)."""
    return events_alias() != DEFAULT_CHANNEL_LAYER


class Inbox:
    """Receives from several sources at once (a client's own channel and its thread
    events), a message at a time; each source's receive is pending from the start until
    `close` cancels it."""

    def __init__(self, sources: list[Receive]) -> None:
        self.sources = sources
        self.tasks = [asyncio.ensure_future(source()) for source in sources]

    async def get(self) -> dict[str, Any]:
        """The next message of any channel; a failed receive raises what it raised."""
        while True:
            for i, task in enumerate(self.tasks):
                if task.done():
                    self.tasks[i] = asyncio.ensure_future(self.sources[i]())
                    return task.result()
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)

    def close(self) -> None:
        """Cancels the pending receives."""
        for task in self.tasks:
            task.cancel()


class LocalChannelLayer(InMemoryChannelLayer):
    """Channels' in-process layer (the embedded default) with a cheaper group_send and
    expiry sweep; the same API, capacity and expiry.

    Channels' own layer sweeps every queue and group for expired entries on each receive
    and group_send, so each delivered event costs time in proportion to the process's
    sockets, and its group_send starts a task and deep-copies the message for each member.
    Here the sweep runs at most every SWEEP_EVERY seconds (an entry expires up to that much
    later), and group_send puts a copy of the message straight into each member's queue.
    A queue at capacity loses the message, as in channels' layer; the socket takes it from
    the log (netra_event_gaps_filled_total)."""

    SWEEP_EVERY = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._swept_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= self.SWEEP_EVERY:
            self._swept_at = now
            super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Sends a copy of the message to each channel of the group (the message's values
        are not copied: no receiver changes them)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = self.groups.get(group)
        if not members:
            return
        expires = time.time() + self.expiry
        for channel in list(members):
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((expires, dict(message)))
