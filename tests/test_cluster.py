"""Layer 4: several workers on the real Redis channel layer and PostgreSQL (README "Tests").

The workers are started as `manage.py run_cluster` starts them, with daphne and with uvicorn.
"""

import asyncio
import time
from collections.abc import Iterator

import pytest

from agents.invariants import run_violations
from tests.cluster import (
    REDIS_URL,
    Cluster,
    postgres_database,
    require_postgres,
    require_redis,
    running_cluster,
)
from tests.httpstreams import BackgroundSse
from tests.sockets import Socket, completed_run, delivery_faults
from tests.test_socket_limit import HANDSHAKES, assert_limit_held, fire_handshakes

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

IDLE_SECONDS = 15


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Two workers of one server kind on the shared Redis and a fresh PostgreSQL database."""
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(
            database_url=database_url, redis_url=REDIS_URL, workers=2, server=request.param
        ) as running,
    ):
        yield running


async def test_socket_on_one_worker_sees_a_run_on_another(cluster: Cluster) -> None:
    token = cluster.make_users("cross", 1)[0]
    thread_id = cluster.new_thread(token)
    watcher = Socket(cluster[0], thread_id, token=token)
    sender = Socket(cluster[1], thread_id, token=token)
    assert (await watcher.open())["type"] == "connection_established"
    assert (await sender.open())["type"] == "connection_established"
    ack = await sender.ask("what is 12*7 and 2**10")
    for socket in (sender, watcher):
        done = await socket.wait_for(completed_run(ack["run_id"]))
        assert done["data"]["status"] == "completed" and "84" in done["data"]["text"]
    logged = cluster.logged_events(thread_id)
    for socket in (sender, watcher):
        assert delivery_faults(socket.events, logged) == dict.fromkeys(
            ("lost", "doubled", "out_of_order", "unknown", "altered"), 0
        )
        assert socket.events == [
            {**e, "ts": f["ts"]} for e, f in zip(logged, socket.events, strict=True)
        ]
    assert run_violations(logged) == []
    await asyncio.gather(watcher.close(), sender.close())


async def test_socket_idle_on_the_redis_layer_still_receives_a_run(cluster: Cluster) -> None:
    """redis-py 8 set socket_timeout to 5 s: idle sockets were torn down (channels_redis #422)."""
    token = cluster.make_users("idle", 1)[0]
    thread_id = cluster.new_thread(token)
    idle = Socket(cluster[0], thread_id, token=token)
    await idle.open()
    await asyncio.sleep(IDLE_SECONDS)
    assert not idle.closed.is_set(), f"the idle socket was closed with {idle.close_code}"
    sender = Socket(cluster[1], thread_id, token=token)
    await sender.open()
    ack = await sender.ask("what is 6*7")
    done = await idle.wait_for(completed_run(ack["run_id"]))
    assert "42" in done["data"]["text"]
    assert idle.frames[0]["type"] == "connection_established"
    assert delivery_faults(idle.events, cluster.logged_events(thread_id))["lost"] == 0
    for worker in cluster.workers:
        assert "Traceback" not in worker.log_text(), worker.log_tail()
    await asyncio.gather(idle.close(), sender.close())


async def test_concurrent_handshakes_over_two_workers_keep_the_socket_limit(
    cluster: Cluster,
) -> None:
    # The limit is counted in PostgreSQL under a lock on the user's row, so handshakes
    # fired at once on two workers with one token cannot all see room (default limit 20).
    token = cluster.make_users("limit", 1)[0]
    thread_id = cluster.new_thread(token)
    accepted, refused = await fire_handshakes(
        [cluster[0], cluster[1]], thread_id, token, HANDSHAKES
    )
    try:
        assert_limit_held(accepted, refused, 20)
    finally:
        await asyncio.gather(*(socket.close() for socket in accepted))


def test_an_sse_stream_on_one_worker_sees_a_run_on_another(cluster: Cluster) -> None:
    """Thread events cross workers by Redis pub/sub; an SSE stream gets them live too."""
    token = cluster.make_users("sse", 1)[0]
    thread_id = cluster.new_thread(token)
    reader = BackgroundSse(
        cluster[1],
        f"/api/threads/{thread_id}/stream/",
        token=token,
        seconds=20,
        until='"type":"agent_completed"',
    )
    time.sleep(1.0)
    status, _ = cluster[0].api(
        "POST",
        f"/api/threads/{thread_id}/messages/",
        token,
        {"text": "what is 12*7", "client_msg_id": "sse-1"},
    )
    assert status == 202
    read = reader.result()
    assert read.status == 200
    logged = cluster.logged_events(thread_id)
    assert [e.id for e in read.events] == [e["seq"] for e in logged]
    assert [e.event for e in read.events] == [e["type"] for e in logged]
    assert logged[-1]["type"] == "agent_completed"
