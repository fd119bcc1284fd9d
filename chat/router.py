"""Thread events from their own layer (chat/layers.py: Redis pub/sub), handed to the
clients of this process.

The process has one channel on that layer (per event loop). Its router subscribes each
thread's group once, however many clients of the process watch the thread, and puts each
event into the inbox of every client on that thread; a client's dispatch takes it from
there, one message at a time with its others. An inbox holds at most CHANNEL_CAPACITY
events, as a channel of the core layer does: past that the client's gap check takes the
rest from the log (netra_event_gaps_filled_total), so a client that reads nothing costs
bounded memory.

The router's channel stays subscribed while the process runs, which also keeps
channels-redis' subscriber reading: while nothing is subscribed it sleeps 0.1 s between
looks, which delayed the first events after a worker's last socket had closed.
"""

import asyncio
import logging
from collections import deque
from typing import Any

from django.conf import settings

from chat import metrics
from chat.errors import report_exception
from chat.layers import events_layer

logger = logging.getLogger("netra.router")


class EventsInbox:
    """One client's thread events: the messages not yet taken, and the one waiter."""

    __slots__ = ("dropped", "groups", "items", "waiter")

    def __init__(self) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self.groups: set[str] = set()

    def put(self, message: dict[str, Any]) -> None:
        """Adds a message; past CHANNEL_CAPACITY waiting ones it is dropped (see above)."""
        if len(self.items) >= settings.CHANNEL_CAPACITY:
            self.dropped += 1
            return
        self.items.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        """The next message, once there is one."""
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


class EventsRouter:
    """This process's channel on the thread events' layer and who on it watches what."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.members: dict[str, set[EventsInbox]] = {}
        self.opening = asyncio.Lock()
        self.unsubscribing: set[asyncio.Task[None]] = set()

    async def join(self, group: str, inbox: EventsInbox) -> None:
        """Hands the group's events to `inbox` from now on. The group is subscribed once
        per process (a group_add of a subscribed group makes no round trip), so a re-join
        also subscribes again what a failure left unsubscribed; a failure raises, and the
        inbox is not joined."""
        async with self.opening:  # one channel, even for sockets joining at once
            if self.channel is None:
                self.channel = await self.layer.new_channel("router.")
                self.task = asyncio.get_running_loop().create_task(self._route(self.channel))
                self.task.add_done_callback(self._ended)
        await self.layer.group_add(group, self.channel)
        self.members.setdefault(group, set()).add(inbox)
        inbox.groups.add(group)

    def discard(self, inbox: EventsInbox) -> None:
        """Stops handing events to `inbox` (idempotent, and local: it works with the layer
        down, for every way a client ends). A group left without clients is unsubscribed
        in the background; a failure there is logged and counted."""
        for group in list(inbox.groups):
            inbox.groups.discard(group)
            members = self.members.get(group)
            if members is None:
                continue
            members.discard(inbox)
            if not members:
                del self.members[group]
                task = asyncio.get_running_loop().create_task(self._unsubscribe(group))
                self.unsubscribing.add(task)
                task.add_done_callback(self._unsubscribed)

    async def _unsubscribe(self, group: str) -> None:
        if group not in self.members and self.channel is not None:  # not joined again since
            await self.layer.group_discard(group, self.channel)

    def _unsubscribed(self, task: asyncio.Task[None]) -> None:
        self.unsubscribing.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_discard").inc()
        logger.warning("could not unsubscribe a thread's group: %s", task.exception())

    async def _route(self, channel: str) -> None:
        while True:
            message = await self.layer.receive(channel)
            for inbox in self.members.get(message.get("group", ""), ()):
                inbox.put(message)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():  # the event loop is closing
            return
        exc = task.exception()
        report_exception(
            exc or RuntimeError("the router's loop ended"),
            "thread events router stopped; its sockets take events from the log until they"
            " re-join their groups",
        )
        self.channel, self.task, self.members = None, None, {}


def events_router() -> EventsRouter:
    """The router of the running event loop for the thread events' layer."""
    layer = events_layer()
    routers: dict[asyncio.AbstractEventLoop, EventsRouter] = layer.__dict__.setdefault(
        "_netra_routers", {}
    )
    loop = asyncio.get_running_loop()
    router = routers.get(loop)
    if router is None:
        for old in [other for other in routers if other.is_closed()]:
            del routers[old]
        router = routers[loop] = EventsRouter(layer)
    return router
