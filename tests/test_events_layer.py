"""Thread events by Redis pub/sub, control messages by the core layer (chat/layers.py), on
a real Redis: a run's events arrive live and gapless by pub/sub, a revoked token still
closes its sockets by the core layer, a killed pub/sub connection loses and doubles
nothing, closed sockets leave nothing subscribed but the worker's router channel, and an events
layer that cannot open a channel closes the socket with 4503."""

import asyncio
import json
import os
import subprocess
import uuid
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from agents.invariants import run_violations
from chat import services
from chat.models import ApiToken
from chat.router import EventsInbox, events_router
from tests import helpers
from tests.cluster import REDIS_URL, require_redis
from tests.servers import PYTHON, ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

CLIENT_NAME = f"netra-test-pubsub-{os.getpid()}"


def layers(events_address: str = REDIS_URL) -> dict[str, Any]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}], "prefix": prefix},
        },
        "events": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": events_address, "client_name": CLIENT_NAME}],
                "prefix": prefix,
            },
        },
    }


@pytest.fixture
def split(settings: Any) -> None:
    """The core layer for sockets and control, Redis pub/sub for thread events."""
    require_redis()
    settings.CHANNEL_LAYERS = layers()


def pubsub_state() -> tuple[list[str], list[str]]:
    """The channels and groups of the events layer in this process (channels-redis
    internals): one channel, the router's (chat/router.py), and a group per watched thread."""
    loop_layer = get_channel_layer("events")._get_layer()
    return list(loop_layer.channels), list(loop_layer.groups)


def kill_our_pubsub_connections() -> int:
    client = redis.Redis.from_url(REDIS_URL)
    ours = [c for c in client.client_list(_type="pubsub") if c.get("name") == CLIENT_NAME]
    for entry in ours:
        client.client_kill_filter(_id=entry["id"])
    client.close()
    return len(ours)


async def test_events_come_by_pubsub_and_a_revoked_token_still_closes(
    split: None, user: Any, thread: Any, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, raw = await database_sync_to_async(services.token_create)(user=user)
    published: list[str] = []
    events = get_channel_layer("events")
    real_group_send = events.group_send

    async def spy(group: str, message: dict[str, Any]) -> None:
        published.append(message["type"])
        await real_group_send(group, message)

    monkeypatch.setattr(events, "group_send", spy)
    gaps_before = helpers.metric("netra_event_gaps_filled_total")
    comm, _ = await helpers.open_socket(thread.id, token=raw)
    await helpers.send(comm, helpers.message("what is 6*7"))
    frames = await helpers.receive_until(comm, helpers.completed)
    run = helpers.run_events(frames)
    assert [e["seq"] for e in run] == list(range(1, len(run) + 1))
    assert run_violations(run) == []
    assert published == ["thread.event"] * len(run)
    assert helpers.metric("netra_event_gaps_filled_total") == gaps_before, "not live"
    # The revocation goes to the token's group on the core layer.
    await database_sync_to_async(services.token_revoke)(
        token=await database_sync_to_async(ApiToken.objects.get)(pk=token.pk)
    )
    frame = await comm.receive_json_from(timeout=5)
    assert frame["code"] == "unauthenticated"
    assert await helpers.expect_close(comm) == 4401
    await comm.disconnect()


async def test_a_killed_pubsub_connection_loses_and_doubles_nothing(
    split: None, thread: Any, token: str, service: Any, settings: Any
) -> None:
    settings.AGENT_STREAM_CHUNK = 1  # one delta per word
    settings.AGENT_STREAM_DELAY = 0.01
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("hello there"))
    frames = [await comm.receive_json_from(timeout=5) for _ in range(12)]
    assert await asyncio.to_thread(kill_our_pubsub_connections) >= 1
    frames += await helpers.receive_until(comm, helpers.completed, timeout=30)
    run = helpers.run_events(frames)
    assert [e["seq"] for e in run] == list(range(1, len(run) + 1)), "lost or doubled"
    assert run_violations(run) == []
    assert len(run) > 40, "the run ended before the kill could matter"
    # Pub/sub is subscribed again: the next run comes live, without a gap to fill.
    await asyncio.sleep(1.5)  # channels-redis' receive loop retries after a second
    gaps_before = helpers.metric("netra_event_gaps_filled_total")
    await helpers.send(comm, helpers.message("what is 2+2"))
    frames = await helpers.receive_until(comm, helpers.completed, timeout=30)
    assert run_violations(helpers.run_events(frames)) == []
    assert helpers.metric("netra_event_gaps_filled_total") == gaps_before
    await comm.disconnect()


async def test_closed_sockets_leave_nothing_subscribed(
    split: None, thread: Any, token: str, service: Any
) -> None:
    opened = await asyncio.gather(*(helpers.open_socket(thread.id, token=token) for _ in range(3)))
    sockets = [comm for comm, _ in opened]
    channels, groups = pubsub_state()
    assert len(channels) == 1 and len(groups) == 1  # one subscription for the three
    for comm in sockets:
        await comm.disconnect()
    for _ in range(50):
        if pubsub_state()[1] == []:
            break
        await asyncio.sleep(0.05)
    # The router's channel stays subscribed, so the subscriber keeps reading.
    assert pubsub_state() == (channels, [])
    subscribed = get_channel_layer("events")._get_layer()._shards[0]._subscribed_to
    assert subscribed == set(channels)


async def test_an_events_layer_that_cannot_subscribe_closes_4503(
    settings: Any, thread: Any, token: str
) -> None:
    require_redis()
    settings.CHANNEL_LAYERS = layers(events_address="redis://127.0.0.1:1/0")
    comm = helpers.communicator(thread.id, token=token)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    frame = await comm.receive_json_from(timeout=10)
    assert (frame["code"], frame["close_code"]) == ("unavailable", 4503)
    assert await helpers.expect_close(comm) == 4503
    await comm.disconnect()


READ_LAYERS = """
import json
from django.conf import settings
print(json.dumps({a: c["BACKEND"] for a, c in settings.CHANNEL_LAYERS.items()}))
"""


def read_layers(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    base |= {"DJANGO_SETTINGS_MODULE": "netra_site.settings", "SECRET_KEY": "x" * 50, **env}
    return subprocess.run(
        [PYTHON, "-c", READ_LAYERS], cwd=ROOT, env=base, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"default": "chat.layers.LocalChannelLayer"}),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0"},
            {
                "default": "channels_redis.core.RedisChannelLayer",
                "events": "channels_redis.pubsub.RedisPubSubChannelLayer",
            },
        ),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_EVENTS_LAYER": "core"},
            {"default": "channels_redis.core.RedisChannelLayer"},
        ),
    ],
)
def test_settings_put_thread_events_on_pubsub_unless_told(
    env: dict[str, str], expected: dict[str, str]
) -> None:
    result = read_layers(**env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_an_unknown_events_layer_stops_the_start() -> None:
    result = read_layers(REDIS_URL="redis://127.0.0.1:6379/0", REDIS_EVENTS_LAYER="kafka")
    assert result.returncode != 0
    assert "REDIS_EVENTS_LAYER must be 'pubsub' or 'core', not 'kafka'" in result.stderr


async def test_an_inbox_holds_at_most_channel_capacity(settings: Any) -> None:
    """A client that reads nothing costs bounded memory; what it missed, its gap check
    takes from the log (tests/test_runs.py's capacity tests on the in-process layer)."""
    settings.CHANNEL_CAPACITY = 3
    inbox = EventsInbox()
    for seq in range(1, 6):
        inbox.put({"type": "thread.event", "seq": seq})
    assert [(await inbox.receive())["seq"] for _ in range(3)] == [1, 2, 3]
    assert inbox.dropped == 2
    waiting = asyncio.ensure_future(inbox.receive())
    await asyncio.sleep(0)
    inbox.put({"type": "thread.event", "seq": 6})
    assert (await asyncio.wait_for(waiting, 1))["seq"] == 6


async def test_a_socket_whose_core_layer_fails_leaves_the_router(
    split: None, thread: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4503 after a failed core-layer receive leaves no group (Redis is gone), but the
    socket's inbox must not stay in the worker's router, collecting its thread's events."""
    broken = helpers.break_layer_receive(monkeypatch, get_channel_layer())
    comm, _ = await helpers.open_socket(thread.id, token=token)
    router = events_router()
    assert sum(len(m) for m in router.members.values()) == 1
    broken.set()
    assert (await comm.receive_json_from(timeout=5))["close_code"] == 4503
    assert await helpers.expect_close(comm) == 4503
    await comm.disconnect()
    assert router.members == {}
    for _ in range(50):  # the emptied group is unsubscribed in the background
        if not router.unsubscribing:
            break
        await asyncio.sleep(0.05)
    assert pubsub_state()[1] == []
