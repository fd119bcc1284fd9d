"""Drain: what a worker does between SIGTERM (or SIGINT) and its exit.

1. It starts no new run: a message that reaches it is still recorded and acknowledged, and
   its run released at once for another worker (AgentService.submit).
2. Its active runs go on for up to SHUTDOWN_GRACE_SECONDS; a second signal cuts that short.
3. The runs still active are released: stopped here without a word to the user, their
   journal left as it is, for another worker (or this process restarted) to continue at
   its next sweep, within RUN_REAPER_INTERVAL.
4. Its sockets are closed with error{code: unavailable} and 4503; clients reconnect
   elsewhere and resume by seq.
5. The server's own handler of the signal runs, and the server stops as it would have.

How the signal reaches us. daphne (Twisted) and uvicorn each install their own handlers,
which stop the server at once (uvicorn even closes its sockets with 1012 first). Neither
offers a hook that waits: daphne runs no ASGI lifespan, and uvicorn's lifespan shutdown
comes after its sockets are gone. So the process installs a Python-level handler for
SIGTERM and SIGINT after the server has installed its own (`install`): it remembers the
server's handler, runs the drain on the server's event loop, and then hands the signal to
the server's handler. The same code then serves daphne, uvicorn, one worker or
`run_cluster` (which sends SIGTERM to each worker).
"""

import asyncio
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer
from django.conf import settings

from chat.broadcaster import worker_group

if TYPE_CHECKING:
    from agents.runtime import AgentService

logger = logging.getLogger("netra.drain")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long the sockets' close frames get to go out before the server's own shutdown.
SOCKET_CLOSE_WAIT = 0.5


async def drain(service: "AgentService", *, grace: float, hurry: asyncio.Event) -> dict[str, Any]:
    """Drains this worker (steps 1 to 4 above); returns what it did, for the log."""
    began = time.monotonic()
    service.draining = True
    active = len(service.runs)
    logger.warning("draining: %d run(s) active; they get up to %.0f s to finish", active, grace)
    waiting = asyncio.ensure_future(service.wait_idle(timeout=max(grace, 0.0)))
    hurried = asyncio.ensure_future(hurry.wait())
    await asyncio.wait({waiting, hurried}, return_when=asyncio.FIRST_COMPLETED)
    for future in (waiting, hurried):
        future.cancel()
    await asyncio.gather(waiting, hurried, return_exceptions=True)
    finished = active - len(service.runs)
    released = await service.release_all()
    await close_sockets()
    summary = {
        "active": active,
        "finished_in_grace": finished,
        "released": released,
        "seconds": round(time.monotonic() - began, 2),
    }
    logger.warning("drained: %s", summary, extra=summary)
    return summary


async def close_sockets() -> None:
    """Tells every socket of this worker to close with error{unavailable} and 4503."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(worker_group(), {"type": "server.draining"})
    except Exception as exc:  # noqa: BLE001 - the server's own shutdown still closes them
        logger.warning("could not tell the sockets to close: %s", exc)
        return
    await asyncio.sleep(SOCKET_CLOSE_WAIT)


class SignalDrain:
    """The process's SIGTERM/SIGINT handler (see the module docstring)."""

    def __init__(self, service: "AgentService", loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.loop = loop
        self.previous: dict[int, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self.hurry = asyncio.Event()

    def install(self) -> None:
        """Puts itself in front of the handlers installed so far (the server's)."""
        for sig in SIGNALS:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Runs in the main thread between two bytecodes: only schedules work on the loop."""
        self.loop.call_soon_threadsafe(self._on_loop, signum)

    def _on_loop(self, signum: int) -> None:
        if self.task is None:
            logger.warning("received %s", signal.Signals(signum).name)
            self.task = self.loop.create_task(self._drain_then_stop(signum), name="netra-drain")
        else:
            logger.warning("received %s again: releasing the runs now", signal.Signals(signum).name)
            self.hurry.set()

    async def _drain_then_stop(self, signum: int) -> None:
        try:
            await drain(self.service, grace=settings.SHUTDOWN_GRACE_SECONDS, hurry=self.hurry)
        finally:
            self._hand_on(signum)

    def _hand_on(self, signum: int) -> None:
        """Restores the server's handlers and gives it the signal, so it stops as usual."""
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, None)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)


_installed: dict[int, SignalDrain] = {}


def install(service: Any) -> bool:
    """Installs the drain handler of `service` (the AgentService) on the running loop,
    once per process (main thread only: Python delivers signals there); True if it is
    installed now or was before."""
    if threading.current_thread() is not threading.main_thread():
        return False
    loop = asyncio.get_running_loop()
    if id(loop) in _installed:
        return True
    handler = SignalDrain(service, loop)
    handler.install()
    _installed[id(loop)] = handler
    logger.info("drain on SIGTERM/SIGINT installed (grace %.0f s)", settings.SHUTDOWN_GRACE_SECONDS)
    return True
