"""Contender N: netra-chat's own ASGI application, plus a bench-only control endpoint.

Every path but `/bench/control/` goes to `netra_site.asgi.application` unchanged. The
control endpoint emits through the agent service's real Broadcaster (log, seq, group_send),
so the sockets receive events exactly as they receive a run's. This module is never
imported by the product.
"""

import uuid
from typing import Any

from netra_site.asgi import application as netra_application

from bench.control import ControlApp, Emit  # isort: skip


def make_emit() -> Emit:
    """Broadcaster.emit of one partial_result per call, one fixed run id per thread."""
    from django.apps import apps

    broadcaster = apps.get_app_config("agents").service.broadcaster  # type: ignore[attr-defined]
    runs: dict[str, uuid.UUID] = {}
    message_id = str(uuid.uuid4())

    async def emit(thread: str, data: dict[str, Any]) -> None:
        run_id = runs.setdefault(thread, uuid.uuid4())
        await broadcaster.emit(
            thread_id=uuid.UUID(thread),
            run_id=run_id,
            type="partial_result",
            data={"message_id": message_id, **data},
        )

    return emit


_control = ControlApp(make_emit)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Routes the control socket to the emit driver and everything else to netra."""
    if scope["type"] == "websocket" and scope.get("path") == "/bench/control/":
        await _control(scope, receive, send)
        return
    await netra_application(scope, receive, send)
