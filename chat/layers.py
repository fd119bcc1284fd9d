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
import time
from collections.abc import Awaitable, Callable
from copy import deepcopy
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.exceptions import ChannelFull
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


class Mailbox:
    """One channel's messages and the receivers waiting for them. channels' layer keeps an
    asyncio.Queue per channel: about 3 KiB (four deques) for every idle socket, in a
    process whose sockets mostly wait (tracemalloc over 400 sockets)."""

    __slots__ = ("messages", "waiters")

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.waiters: list[asyncio.Future[None]] = []

    def wake_one(self) -> None:
        """Wakes the first receiver still waiting, if any."""
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
                return


class LocalChannelLayer(InMemoryChannelLayer):
    """Channels' in-process layer (the embedded default) with a cheaper group_send, expiry
    sweep and idle channel; the same API, capacity and expiry.

    Channels' own layer sweeps every queue and group for expired entries on each receive
    and group_send, so each delivered event costs time in proportion to the process's
    sockets, and its group_send starts a task and deep-copies the message for each member.
    Here the sweep runs at most every SWEEP_EVERY seconds (an entry expires up to that much
    later), group_send puts a copy of the message straight into each member's mailbox, and
    a channel is a Mailbox, not an asyncio.Queue. A mailbox at capacity loses a group's
    message, as channels' layer does; the socket takes it from the log
    (netra_event_gaps_filled_total). A send to a full channel raises ChannelFull."""

    SWEEP_EVERY = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._swept_at = 0.0
        self.channels: dict[str, Mailbox] = {}

    def _mailbox(self, channel: str) -> Mailbox:
        box = self.channels.get(channel)
        if box is None:
            box = self.channels[channel] = Mailbox()
        return box

    def _clean_expired(self) -> None:
        """channels' sweep (InMemoryChannelLayer._clean_expired is the reference), at most
        once every SWEEP_EVERY seconds, over mailboxes instead of queues."""
        now = time.monotonic()
        if now - self._swept_at < self.SWEEP_EVERY:
            return
        self._swept_at = now
        wall = time.time()
        self._expire_messages(wall)
        self._expire_memberships(wall)

    def _expire_messages(self, wall: float) -> None:
        """Drops messages past their expiry; a channel that had one leaves its groups."""
        for channel, box in list(self.channels.items()):
            expired = 0
            while expired < len(box.messages) and box.messages[expired][0] < wall:
                expired += 1
            if expired:
                del box.messages[:expired]
                self._remove_from_groups(channel)  # as channels' layer does
            if not box.messages and not box.waiters:
                self.channels.pop(channel, None)

    def _expire_memberships(self, wall: float) -> None:
        """Drops group memberships older than group_expiry."""
        joined_before = int(wall) - self.group_expiry
        for members in self.groups.values():
            for name, joined in list(members.items()):
                if joined and joined < joined_before:
                    members.pop(name, None)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Puts a copy of the message on the channel; a full channel raises ChannelFull."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        box = self._mailbox(channel)
        if len(box.messages) >= self.get_capacity(channel):
            raise ChannelFull(channel)
        box.messages.append((time.time() + self.expiry, deepcopy(message)))
        box.wake_one()

    async def receive(self, channel: str) -> dict[str, Any]:
        """The channel's next message, once there is one."""
        self.require_valid_channel_name(channel)
        self._clean_expired()
        box = self._mailbox(channel)
        while not box.messages:
            waiter = asyncio.get_running_loop().create_future()
            box.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if box.messages and waiter.done() and not waiter.cancelled():
                    box.wake_one()  # it was this receiver's turn: hand it on
                raise
            finally:
                box.waiters.remove(waiter)
        _, message = box.messages.pop(0)
        if not box.messages and not box.waiters and self.channels.get(channel) is box:
            del self.channels[channel]
        return message

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
            box = self._mailbox(channel)
            if len(box.messages) < self.get_capacity(channel):
                box.messages.append((expires, dict(message)))
                box.wake_one()
