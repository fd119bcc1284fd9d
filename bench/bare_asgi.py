"""Contender B: a bare Channels consumer in the pattern of the Channels tutorial.

group_add on connect, group_send per event, send_json in the handler: no persistence, no
seq, no gap check. It runs on the same ASGI server and the same channel layer settings as
netra (DJANGO_SETTINGS_MODULE=netra_site.settings), so only the pipeline differs.
"""

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.control import ControlApp, Emit  # noqa: E402


class BareConsumer(AsyncJsonWebsocketConsumer):
    """Joins the thread's group and forwards what is sent to it."""

    async def connect(self) -> None:
        """Joins the group, then accepts."""
        self.group = f"bare.{self.scope['url_route']['kwargs']['thread']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        """Leaves the group."""
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Answers a ping (the idle-capacity probe)."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def chat_event(self, message: dict[str, Any]) -> None:
        """Sends one event to the socket."""
        await self.send_json(message["event"])


def make_emit() -> Emit:
    """group_send of one event, the tutorial way."""
    layer = get_channel_layer()

    async def emit(thread: str, data: dict[str, Any]) -> None:
        event = {"type": "partial_result", "thread_id": thread, "data": data}
        await layer.group_send(f"bare.{thread}", {"type": "chat.event", "event": event})

    return emit


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("bench/control/", ControlApp(make_emit)),  # type: ignore[arg-type]
                path("ws/bare/<str:thread>/", BareConsumer.as_asgi()),
            ]
        )
    }
)
