"""Contender B: a bare Channels consumer in the pattern of the Channels tutorial.

group_add on connect, group_send per event, send_json in the handler: no persistence, no
seq, no gap check. It runs on the same ASGI server and the same channel layer settings as
netra (DJANGO_SETTINGS_MODULE=netra_site.settings), so only the pipeline differs.

A `user_message` starts a "run" as a task (so the consumer keeps forwarding while it goes):
the turn workload gets the event sequence the built-in agent emits for its question, and a
message starting with bench.schedule.PREFIX gets an answer streamed on the scripted
model's schedule, as N's bench agent streams it.
"""

import asyncio
import os
import uuid
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench import schedule  # noqa: E402
from bench.control import ControlApp, Emit  # noqa: E402

# What the built-in agent emits for the turn workload's `what is 12*7 and 2**10`.
TURN_SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("agent_started", {"agent": "bare"}),
    ("agent_thinking", {"text": "I will compute 2 expressions.", "step": 1}),
    ("tool_executing", {"tool_call_id": "c1", "tool": "calculator", "args": {"e": "12*7"}}),
    ("tool_completed", {"tool_call_id": "c1", "tool": "calculator", "status": "ok"}),
    ("tool_executing", {"tool_call_id": "c2", "tool": "calculator", "args": {"e": "2**10"}}),
    ("tool_completed", {"tool_call_id": "c2", "tool": "calculator", "status": "ok"}),
    ("agent_thinking", {"text": "Writing the answer.", "step": 2}),
    ("partial_result", {"text": "12*7 = 84. 2**10 = 1024."}),
    ("agent_completed", {"status": "completed", "text": "12*7 = 84. 2**10 = 1024."}),
]


class BareConsumer(AsyncJsonWebsocketConsumer):
    """Joins the thread's group and forwards what is sent to it."""

    async def connect(self) -> None:
        """Joins the group, then accepts."""
        self.group = f"bare.{self.scope['url_route']['kwargs']['thread']}"
        self.runs: set[asyncio.Task[None]] = set()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        """Leaves the group."""
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Answers a ping (the idle-capacity probe)."""
        if not isinstance(content, dict):
            return
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        elif content.get("type") == "user_message":
            await self.send_json({"type": "ack", "client_msg_id": content.get("client_msg_id")})
            task = asyncio.create_task(self.answer(str(content.get("text", ""))))
            self.runs.add(task)
            task.add_done_callback(self.runs.discard)

    async def answer(self, text: str) -> None:
        """group_send of each event of the run, the tutorial way."""
        run_id = str(uuid.uuid4())

        async def send(type: str, data: dict[str, Any]) -> None:
            event = {"type": type, "run_id": run_id, "data": data}
            await self.channel_layer.group_send(self.group, {"type": "chat.event", "event": event})
            await asyncio.sleep(0)  # as the control driver does: a run yields between events

        if not text.startswith(schedule.PREFIX):
            for type, data in TURN_SCRIPT:
                await send(type, data)
            return
        await send("agent_started", {"agent": "bare"})
        await send("agent_thinking", {"text": "Working on it.", "step": 1})
        parts = []
        async for piece in schedule.chunks():
            parts.append(piece)
            await send("partial_result", {"text": piece})
        await send("agent_completed", {"status": "completed", "text": "".join(parts)})

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
