"""Delivery on its own: real events in the log, a fake socket and a fake channel layer."""

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import DatabaseError
from prometheus_client import REGISTRY

from chat import delivery as delivery_module
from chat import watch
from chat.broadcaster import thread_group, token_group
from chat.delivery import Delivery, TextSink
from chat.errors import NetraError
from chat.events import event_append
from chat.protocol import encode

pytestmark = [pytest.mark.django_db(transaction=True)]

RUN = uuid.uuid4()


class FakeLayer:
    """Records what a delivery asks of the channel layer; fails on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failing = False

    async def group_add(self, group: str, channel: str) -> None:
        if self.failing:
            raise ConnectionError("the layer is down")
        self.calls.append(("group_add", group))

    async def group_discard(self, group: str, channel: str) -> None:
        self.calls.append(("group_discard", group))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.calls.append(("send", message["type"]))


class FakeSocket:
    """The frames a delivery sent, decoded."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if "seq" in f]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def append(thread: Any, *types: str) -> list[dict[str, Any]]:
    def write() -> list[dict[str, Any]]:
        return [
            event_append(thread_id=thread.id, run_id=RUN, type=t, data={"n": i})
            for i, t in enumerate(types)
        ]

    return await database_sync_to_async(write)()


def notification(event: dict[str, Any]) -> dict[str, Any]:
    """The `thread.event` the broadcaster sends for a logged event."""
    return {
        "type": "thread.event",
        "seq": event["seq"],
        "event_type": event["type"],
        "text": encode(event),
        "emitted_at": time.time(),
    }


def make(thread: Any, token_id: uuid.UUID | None = None) -> tuple[Delivery, FakeSocket, FakeLayer]:
    socket, layer = FakeSocket(), FakeLayer()
    delivery = Delivery(
        layer=layer,
        channel_name="test.channel",
        thread_id=thread.id,
        token_id=token_id,
        sink=TextSink(socket.send_text),
        connection_id=uuid.uuid4(),
    )
    return delivery, socket, layer


async def test_join_starts_after_the_log_and_leave_discards(thread: Any) -> None:
    await append(thread, "agent_started", "agent_thinking")
    token_id = uuid.uuid4()
    delivery, _, layer = make(thread, token_id)
    await delivery.join()
    assert delivery.last_seq == 2
    assert layer.calls == [
        ("group_add", thread_group(thread.id)),
        ("group_add", token_group(token_id)),
    ]
    await delivery.leave()
    await delivery.leave()  # a second leave does nothing
    assert [c for c, _ in layer.calls].count("group_discard") == 2


async def test_sockets_closed_together_leave_at_most_max_leaves_at_once(thread: Any) -> None:
    """300 sockets close at once: every membership is discarded, never more than
    MAX_LEAVES sockets' at a time (a Redis pool would run out of connections)."""
    leaving = most = 0

    class SlowLayer(FakeLayer):
        async def group_discard(self, group: str, channel: str) -> None:
            nonlocal leaving, most
            leaving += 1
            most = max(most, leaving)
            await asyncio.sleep(0.001)
            leaving -= 1
            await super().group_discard(group, channel)

    layer = SlowLayer()
    deliveries = []
    for _ in range(300):
        delivery, _, _ = make(thread)
        delivery.layer = layer
        delivery.joined = True
        deliveries.append(delivery)
    await asyncio.gather(*(d.leave() for d in deliveries))
    assert [c for c, _ in layer.calls].count("group_discard") == 300
    assert most == watch.MAX_LEAVES


async def test_join_failure_is_unavailable_and_counted(thread: Any) -> None:
    delivery, _, layer = make(thread)
    layer.failing = True
    before = sample("netra_channel_layer_errors_total", operation="group_add")
    with pytest.raises(NetraError) as caught:
        await delivery.join()
    assert (caught.value.code, caught.value.close_code) == ("unavailable", 4503)
    assert sample("netra_channel_layer_errors_total", operation="group_add") == before + 1
    await delivery.leave()
    assert not any(c == "group_discard" for c, _ in layer.calls)


async def test_forward_in_order_and_drop_doubles(thread: Any) -> None:
    delivery, socket, _ = make(thread)
    await delivery.join()
    events = await append(thread, "agent_started", "agent_thinking", "agent_completed")
    for event in [events[0], events[1], events[1], events[0], events[2]]:
        await delivery.forward(notification(event))
    assert socket.seqs() == [1, 2, 3]
    assert delivery.tail_dirty is False  # the run's last event came


async def test_a_gap_is_filled_from_the_log_before_forwarding(thread: Any) -> None:
    delivery, socket, _ = make(thread)
    await delivery.join()
    events = await append(thread, "agent_started", "agent_thinking", "partial_result")
    before = sample("netra_event_gaps_filled_total")
    await delivery.forward(notification(events[2]))
    assert socket.seqs() == [1, 2, 3]
    assert socket.frames[0] == {**events[0], "ts": socket.frames[0]["ts"]}
    assert sample("netra_event_gaps_filled_total") == before + 2
    assert delivery.tail_dirty is True  # the run is not over: its tail is checked later


async def test_tail_check_sends_what_the_layer_lost(thread: Any) -> None:
    delivery, socket, _ = make(thread)
    await delivery.join()
    await append(thread, "agent_started", "agent_thinking")
    delivery.tail_dirty = False
    await delivery.check_tail()
    assert socket.seqs() == [1, 2]
    assert delivery.tail_dirty is True  # no agent_completed yet: look again later
    await append(thread, "agent_completed")
    delivery.tail_dirty = False
    await delivery.check_tail()
    assert (socket.seqs(), delivery.tail_dirty) == ([1, 2, 3], False)


async def test_tail_check_survives_a_database_outage(
    thread: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, socket, _ = make(thread)
    await delivery.join()

    def down(**kwargs: Any) -> Any:
        raise DatabaseError("connection refused")

    monkeypatch.setattr(delivery_module, "encoded_events_after", down)
    delivery.tail_dirty = False
    await delivery.check_tail()
    assert (socket.frames, delivery.tail_dirty) == ([], True)


async def test_replay_resends_and_completes(thread: Any) -> None:
    delivery, socket, _ = make(thread)
    await delivery.join()
    await append(thread, "agent_started", "agent_thinking", "agent_completed")
    await delivery.replay(1)
    assert socket.seqs() == [2, 3]
    assert socket.frames[-1] == {
        "type": "resume_complete",
        "after_seq": 1,
        "last_seq": 3,
        "recovered": True,
    }
    await delivery.replay(0)  # an explicit resume re-sends what the socket already had
    assert socket.seqs() == [2, 3, 1, 2, 3]


async def test_replay_past_the_end_of_the_log_counts_as_its_end(thread: Any) -> None:
    delivery, socket, _ = make(thread)
    await delivery.join()
    await append(thread, "agent_started")
    await delivery.replay(50)
    assert socket.frames == [
        {"type": "resume_complete", "after_seq": 50, "last_seq": 1, "recovered": True}
    ]
    later = await append(thread, "agent_thinking")
    await delivery.forward(notification(later[0]))
    assert socket.seqs() == [2]


async def test_rejoin_asks_for_a_tail_check_and_tolerates_a_failure(thread: Any) -> None:
    delivery, _, layer = make(thread)
    await delivery.join()
    delivery.tail_dirty = False
    layer.failing = True
    await delivery.rejoin()
    assert delivery.tail_dirty is False
    layer.failing = False
    await delivery.rejoin()
    assert delivery.tail_dirty is True
