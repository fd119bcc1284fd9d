"""The process-wide side of the sockets' watch (chat/delivery.py): one timer for every
socket's re-joins and tail checks (`Ticker`), and the bound on sockets leaving their groups
at once (`LEAVES`). Both keep a process from taking more channel-layer connections at once
than a pool holds."""

import asyncio
import time
from typing import TYPE_CHECKING

from chat.errors import report_exception

if TYPE_CHECKING:  # a Delivery registers itself here; only its type is needed
    from chat.delivery import Delivery

# After the last event a socket forwarded, how long it waits before asking the log whether
# the channel layer lost the tail of a burst (a lost last event has no successor to reveal it).
TAIL_CHECK_AFTER = 1.0

# The most sockets of one process that leave their groups at once: sockets closed together
# (the end of a deploy's drain, a network drop) would otherwise take more channel-layer
# connections at once than a pool holds (redis-py raises MaxConnectionsError past it).
MAX_LEAVES = 64


class LoopGate:
    """A semaphore of `limit` for the running event loop (a new loop, as in tests, gets its
    own)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.loop: asyncio.AbstractEventLoop | None = None
        self.semaphore: asyncio.Semaphore | None = None

    def gate(self) -> asyncio.Semaphore:
        """The semaphore of the running loop."""
        loop = asyncio.get_running_loop()
        if self.semaphore is None or self.loop is not loop:
            self.loop, self.semaphore = loop, asyncio.Semaphore(self.limit)
        return self.semaphore


LEAVES = LoopGate(MAX_LEAVES)


# The most watches (re-joins, tail checks) one process runs at once: with thousands of
# sockets a tick's due work would otherwise take more channel-layer connections at once
# than a pool holds (redis-py raises MaxConnectionsError past it); the rest wait a tick.
MAX_WATCHES = 64


class Ticker:
    """One timer per process (per event loop) for the watch of every socket: each tick it
    asks each Delivery for its due work and runs that as a short task, one at a time per
    socket, so a slow re-join of one socket delays no other socket's tail check; at most
    MAX_WATCHES at once, taking the sockets in turn from where the last tick stopped."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.deliveries: set[Delivery] = set()
        self.task: asyncio.Task[None] | None = None
        self.running: set[asyncio.Task[None]] = set()
        self.start = 0

    def add(self, delivery: "Delivery") -> None:
        """Watches a socket's delivery from the next tick on."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new event loop (tests): nothing of the old one is valid
            self.loop, self.deliveries, self.task, self.running = loop, set(), None, set()
        self.deliveries.add(delivery)
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
            self.task.add_done_callback(_watch_done)

    def discard(self, delivery: "Delivery") -> None:
        """Stops watching a delivery (the timer stops with the last one)."""
        self.deliveries.discard(delivery)

    async def _run(self) -> None:
        while self.deliveries:
            await asyncio.sleep(TAIL_CHECK_AFTER)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Starts the due work of the sockets in turn, up to MAX_WATCHES running."""
        deliveries = list(self.deliveries)
        if not deliveries:
            return
        first = self.start % len(deliveries)
        for offset in range(len(deliveries)):
            if len(self.running) >= MAX_WATCHES:
                self.start = first + offset  # the next tick goes on from here
                return
            delivery = deliveries[(first + offset) % len(deliveries)]
            if delivery.watch_task is not None and not delivery.watch_task.done():
                continue
            work = delivery.due(now)
            if work is not None:
                task = asyncio.create_task(work)
                delivery.watch_task = task
                self.running.add(task)
                task.add_done_callback(self.running.discard)
                task.add_done_callback(_watch_done)
        self.start = first


def _watch_done(task: asyncio.Task[None]) -> None:
    """Reports a watch (or the timer itself) that ended with an exception."""
    exc = None if task.cancelled() else task.exception()
    if exc is not None:
        report_exception(exc, "the socket watch failed", throttle="watch")


TICKER = Ticker()
