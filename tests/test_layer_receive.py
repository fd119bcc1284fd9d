"""Only a failing channel-layer receive counts as a channel-layer receive error and closes
the socket with 4503; a bug that escapes dispatch is a 4500 server fault."""

import hashlib
import inspect
from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from prometheus_client import REGISTRY

from chat.models import ConnectionStateLog
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def receive_errors() -> float:
    labels = {"operation": "receive"}
    return REGISTRY.get_sample_value("netra_channel_layer_errors_total", labels) or 0.0


def states(connection_id: str) -> list[tuple[str, str]]:
    rows = ConnectionStateLog.objects.filter(connection_id=connection_id).order_by("id")
    return [(r.from_state, r.to_state) for r in rows]


async def test_layer_receive_failure_closes_4503_and_counts(
    thread: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = helpers.break_layer_receive(monkeypatch, get_channel_layer())
    before = receive_errors()
    comm, first = await helpers.open_socket(thread.id, token=token)
    broken.set()
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], frame["close_code"]) == ("unavailable", 4503)
    assert await helpers.expect_close(comm) == 4503
    await comm.disconnect()
    assert receive_errors() == before + 1
    rows = await database_sync_to_async(states)(first["connection_id"])
    assert rows[-2:] == [("CONNECTED", "FAILED"), ("FAILED", "CLOSED")]


async def test_exception_past_dispatch_is_not_a_layer_error(
    thread: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat.consumers import ChatConsumer

    real_dispatch = ChatConsumer.dispatch

    async def leaky_dispatch(self: Any, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.receive":
            raise RuntimeError("a bug that escapes dispatch")
        await real_dispatch(self, message)

    monkeypatch.setattr(ChatConsumer, "dispatch", leaky_dispatch)
    before = receive_errors()
    comm, first = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, {"type": "ping"})
    frame = await comm.receive_json_from(timeout=5)
    assert receive_errors() == before, "a bug past dispatch was counted as a layer failure"
    assert (frame["code"], frame["close_code"]) == ("internal_error", 4500)
    assert await helpers.expect_close(comm) == 4500
    await comm.disconnect()
    rows = await database_sync_to_async(states)(first["connection_id"])
    assert rows[-2:] == [("CONNECTED", "FAILED"), ("FAILED", "CLOSED")]


# sha256 of channels 4.3.2's AsyncConsumer.__call__, which GuardedLayerReceive.serve repeats
# with one more source. A channels release that changes it fails here: bring serve up to
# date, then record the new hash.
ASYNC_CONSUMER_CALL_SHA256 = "e52238720872dbc3f854519bc971aa7eb41553e63c8729081549ce42465ee419"


def test_serve_follows_the_channels_consumer_loop_it_repeats() -> None:
    source = inspect.getsource(AsyncConsumer.__call__)
    assert hashlib.sha256(source.encode()).hexdigest() == ASYNC_CONSUMER_CALL_SHA256, source
