"""Contender N: netra-chat's own ASGI application, plus a bench-only control endpoint.

Every path but `/bench/control/` goes to `netra_site.asgi.application` unchanged. The
control endpoint emits through a run's real emitter and the agent service's Broadcaster
(pipeline, log, seq, group_send),
so the sockets receive events exactly as they receive a run's. This module is never
imported by the product.
"""

import uuid
from typing import Any

from netra_site.asgi import application as netra_application

from bench.control import ControlApp, Emit  # isort: skip


def make_emit() -> Emit:
    """One partial_result per call through a run's own emitter (agents/emitter.py), one
    fixed run per thread: queued for the log in order, committed in batches, sent once
    committed, the emit returning once queued (at most MAX_IN_FLIGHT waiting), as a run's
    delta is. `emit.settle` waits until every queued one is logged and sent, and raises a
    failed write."""
    from django.apps import apps

    from agents.emitter import RunEmitter
    from chat.runevents import EventType

    broadcaster = apps.get_app_config("agents").service.broadcaster  # type: ignore[attr-defined]
    emitters: dict[str, RunEmitter] = {}
    message_id = uuid.uuid4()

    async def emit(thread: str, data: dict[str, Any]) -> None:
        emitter = emitters.get(thread)
        if emitter is None:
            emitter = emitters[thread] = RunEmitter(
                broadcaster,
                thread_id=uuid.UUID(thread),
                run_id=uuid.uuid4(),
                message_id=uuid.uuid4(),
                assistant_message_id=message_id,
                agent="bench",
                is_started=True,  # the bench's events need no agent_started
            )
        # The delta's own path (RunEmitter.partial), with the bench's fields in its data.
        await emitter._emit(EventType.PARTIAL_RESULT, {"message_id": str(message_id), **data})

    async def settle() -> None:
        for emitter in emitters.values():
            await emitter.settle()

    emit.settle = settle  # type: ignore[attr-defined]
    return emit


_control = ControlApp(make_emit)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Routes the control socket to the emit driver and everything else to netra."""
    if scope["type"] == "websocket" and scope.get("path") == "/bench/control/":
        await _control(scope, receive, send)
        return
    await netra_application(scope, receive, send)
