"""Deleting a thread on a cluster: two workers on the real Redis channel layer and
PostgreSQL. The run on the other worker is cancelled first, then the sockets on both
workers get error{thread_not_found} and close with 4404; no event outlives the thread."""

import asyncio
import uuid

import pytest

from tests.cluster import (
    REDIS_URL,
    postgres_database,
    query,
    require_postgres,
    require_redis,
    running_cluster,
)
from tests.sockets import Socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


async def test_deleting_a_thread_closes_its_sockets_on_every_worker_with_4404() -> None:
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(database_url=database_url, redis_url=REDIS_URL, workers=2) as cluster,
    ):
        token = cluster.make_users("deleter", 1)[0]
        thread_id = cluster.new_thread(token)
        here = Socket(cluster[0], thread_id, token=token)
        there = Socket(cluster[1], thread_id, token=token)
        assert (await here.open())["type"] == "connection_established"
        assert (await there.open())["type"] == "connection_established"
        ack = await there.ask("wait 10 seconds")  # the run executes on worker 1
        await here.wait_for(lambda f: f.get("type") == "tool_executing")

        status, _ = await asyncio.to_thread(
            cluster[0].api, "DELETE", f"/api/threads/{thread_id}/", token
        )
        assert status == 204
        for socket in (here, there):
            done = await socket.wait_for(lambda f: f.get("type") == "agent_completed")
            assert (done["run_id"], done["data"]["status"]) == (ack["run_id"], "cancelled")
            error = await socket.wait_for(lambda f: f.get("type") == "error")
            assert (error["code"], error["close_code"]) == ("thread_not_found", 4404)
            assert await socket.wait_closed(10) == 4404
        await asyncio.sleep(1.0)  # anything late from the run would land by now
        thread = uuid.UUID(thread_id)
        assert query(
            database_url, "SELECT count(*) FROM chat_event WHERE thread_id = %s", thread
        ) == [(0,)]
        assert query(
            database_url, "SELECT count(*) FROM agents_agentrun WHERE thread_id = %s", thread
        ) == [(0,)]
        kept = query(
            database_url,
            "SELECT c.thread_id, count(l.id) FROM chat_connection c "
            "JOIN chat_connectionstatelog l ON l.connection_id = c.id "
            "WHERE c.requested_thread = %s GROUP BY c.id",
            thread_id,
        )
        assert len(kept) == 2 and all(t is None and n >= 4 for t, n in kept), kept
        status, body = await asyncio.to_thread(
            cluster[1].api, "GET", f"/api/threads/{thread_id}/events/", token
        )
        assert (status, body["error"]["code"]) == (404, "thread_not_found")
        for worker in cluster.workers:
            assert "Traceback" not in worker.log_text(), worker.log_tail()


async def test_a_deletion_that_does_not_wait_for_the_run_leaves_no_orphan_event() -> None:
    """THREAD_DELETE_CANCEL_WAIT=0: the thread goes while its run on the other worker is
    still active; the run's next append finds no thread (the row lock orders the two on
    PostgreSQL), and the run stops without writing it."""
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(
            database_url=database_url,
            redis_url=REDIS_URL,
            workers=2,
            env={"THREAD_DELETE_CANCEL_WAIT": "0"},
        ) as cluster,
    ):
        token = cluster.make_users("hasty", 1)[0]
        thread_id = cluster.new_thread(token)
        there = Socket(cluster[1], thread_id, token=token)
        await there.open()
        await there.ask("wait 2 seconds and what is 1+1")
        await there.wait_for(lambda f: f.get("type") == "tool_executing")
        status, _ = await asyncio.to_thread(
            cluster[0].api, "DELETE", f"/api/threads/{thread_id}/", token
        )
        assert status == 204
        assert await there.wait_closed(10) == 4404
        await asyncio.sleep(3.0)  # past the wait tool: the run has tried its next event
        assert query(
            database_url,
            "SELECT count(*) FROM chat_event WHERE thread_id = %s",
            uuid.UUID(thread_id),
        ) == [(0,)]
        log = cluster[1].log_text()
        assert "thread deleted during the run" in log
        for worker in cluster.workers:
            assert "Traceback" not in worker.log_text(), worker.log_tail()
