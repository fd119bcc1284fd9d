"""Chaos on a real cluster: a worker killed, Redis restarted, a client's TCP connection cut,
PostgreSQL unreachable, channel capacity overflowing. Each test counts exactly what every
socket received against the event log, the source of truth.
"""

import asyncio
import os
import signal
import time
import urllib.parse
import uuid
from typing import Any

import pytest
import websockets

from agents.invariants import by_run, run_violations
from tests.cluster import (
    REDIS_URL,
    PrivateRedis,
    TcpProxy,
    postgres_database,
    query,
    record,
    require_postgres,
    require_redis,
    require_redis_server,
    running_cluster,
)
from tests.helpers import metric
from tests.sockets import Socket, completed_run, delivery_faults

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(180)]

RUN_STALE_AFTER = 3.0
CHAOS_ENV = {
    "RUN_STALE_AFTER": str(RUN_STALE_AFTER),
    "PROCESS_STALE_AFTER": "3",
    "WS_GROUP_REFRESH_INTERVAL": "1",
}
NO_FAULTS = dict.fromkeys(("lost", "doubled", "out_of_order", "unknown", "altered"), 0)


async def poll_closed(database_url: str, connection_id: uuid.UUID, timeout: float) -> str:
    """Waits until the state log closes a connection; returns the reason of its last entry."""
    deadline = time.monotonic() + timeout
    while True:
        rows = query(
            database_url,
            "SELECT c.state, l.reason FROM chat_connection c JOIN chat_connectionstatelog l "
            "ON l.connection_id = c.id WHERE c.id = %s ORDER BY l.created_at DESC, l.id DESC",
            connection_id,
        )
        if rows and rows[0][0] == "CLOSED":
            return str(rows[0][1])
        assert time.monotonic() < deadline, f"connection {connection_id} not closed: {rows}"
        await asyncio.sleep(0.3)


async def ask_resuming(socket: Socket, text: str) -> dict[str, Any]:
    """Sends a user_message until it is acknowledged, reconnecting in between; the same
    client_msg_id each time, so a retry never starts a second run."""
    client_msg_id = uuid.uuid4().hex
    for _ in range(20):
        await socket.ensure_open()
        try:
            return await socket.ask(text, client_msg_id)
        except (AssertionError, websockets.ConnectionClosed):
            if socket.is_open:
                raise
    raise AssertionError(f"no ack for {text!r}; refusals {socket.refusals[-3:]}")


def assert_exact(sockets: list[Socket], logged: list[dict[str, Any]]) -> dict[str, int]:
    """Every socket received the whole log once and in order; returns the summed counts."""
    total = dict.fromkeys(NO_FAULTS, 0)
    for socket in sockets:
        faults = delivery_faults(socket.events, logged)
        assert faults == NO_FAULTS, (socket.server.port, faults)
        assert [e["seq"] for e in socket.events] == [e["seq"] for e in logged]
    for run_id, events in by_run(logged).items():
        assert run_violations(events) == [], (run_id, run_violations(events))
    return total


@pytest.mark.parametrize("fault", ["restart", "flush"])
async def test_redis_restart_mid_stream_loses_and_doubles_nothing(
    fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`restart`: Redis killed and started empty, so every blocking receive fails and the
    sockets close with 4503 and resume. `flush`: Redis forgets everything but keeps its
    connections, so the sockets stay open outside their groups until they re-join."""
    require_redis_server()
    require_postgres()
    redis = PrivateRedis().start()
    try:
        with (
            postgres_database() as database_url,
            running_cluster(
                database_url=database_url, redis_url=redis.url, env=CHAOS_ENV
            ) as cluster,
        ):
            token = cluster.make_users("redis", 1)[0]
            thread_id = cluster.new_thread(token)
            # Two sockets on each worker: the one holding a worker's blocking receive sees the
            # restart; the others may survive it and must still get every event.
            sockets = [Socket(cluster[i % 2], thread_id, token=token) for i in range(4)]
            for socket in sockets:
                await socket.ensure_open()
            runs, restarted_at, recovered_after = 6, 0.0, None
            for index in range(runs):
                ack = await ask_resuming(sockets[0], f"what is {index}*7 and 2**{index}")
                if index == 2:
                    restarted_at = time.monotonic()
                    if fault == "flush":
                        redis.flush()
                    else:
                        redis.stop()
                        await asyncio.sleep(1.0)
                        redis.start()
                for socket in sockets:
                    await socket.follow(completed_run(ack["run_id"]))
                if index == 2:
                    recovered_after = time.monotonic() - restarted_at
            logged = cluster.logged_events(thread_id)
            assert_exact(sockets, logged)
            closes = [code for s in sockets for code in s.close_codes]
            assert set(closes) <= {4503}, f"sockets closed with {closes}, not 4503"
            assert len(by_run(logged)) == runs
            if fault == "flush":
                assert closes == [], "a flush drops no connection"
            else:
                assert closes, "a restart drops the blocking receives"
            # No zombie: the state log holds exactly the sockets still open as CONNECTED, and
            # every socket closed by the restart was closed out with its code and a reason.
            states = query(
                database_url,
                "SELECT state, close_code, count(*) FROM chat_connection "
                "WHERE requested_thread = %s AND state IN ('CONNECTED', 'CLOSED') "
                "GROUP BY state, close_code ORDER BY state, close_code",
                thread_id,
            )
            assert ("CONNECTED", None, len(sockets)) in states, states
            assert sum(n for state, _, n in states if state == "CONNECTED") == len(sockets)
            assert sum(n for state, code, n in states if state == "CLOSED" and code == 4503) == len(
                closes
            ), states
            record(
                capsys,
                f"redis_{fault}",
                sockets=len(sockets),
                runs=runs,
                events=len(logged),
                delivered=sum(len(s.events) for s in sockets),
                lost=0,
                doubled=0,
                closed_with_4503=len(closes),
                survived=sum(1 for s in sockets if not s.close_codes),
                time_to_recover_s=round(recovered_after or 0, 2),
            )
    finally:
        redis.stop()


async def test_killed_worker_run_is_continued_elsewhere_and_resumed_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """kill -9 of the worker executing a run: the survivor adopts the run within
    RUN_STALE_AFTER and continues it (agent_thinking{resumed: true}; the interrupted call
    completes with `interrupted`), and a client resuming there gets it all."""
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(database_url=database_url, redis_url=REDIS_URL, env=CHAOS_ENV) as cluster,
    ):
        token = cluster.make_users("kill", 1)[0]
        thread_id = cluster.new_thread(token)
        victim, survivor = cluster[0], cluster[1]
        client = Socket(victim, thread_id, token=token)
        watcher = Socket(survivor, thread_id, token=token)
        await client.ensure_open()
        await watcher.ensure_open()
        ack = await client.ask("wait 2 seconds")
        await client.wait_for(lambda f: f.get("type") == "tool_executing")
        seen_before = len(client.events)
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        await watcher.wait_for(
            lambda f: f.get("type") == "agent_thinking" and f["data"].get("resumed") is True,
            timeout=30,
        )
        continued_after = time.monotonic() - killed_at
        # The heartbeat was at most one interval old at the kill; the sweep runs every
        # RUN_REAPER_INTERVAL; both are 0.5 s here. The rest is slack for a loaded machine.
        assert continued_after <= RUN_STALE_AFTER + 0.5 + 0.5 + 3.0, continued_after
        done = await watcher.wait_for(completed_run(ack["run_id"]), timeout=30)
        assert done["data"]["status"] == "completed"
        # The client comes back on the survivor, after the last seq it saw.
        resumed_after = client.last_seq
        client.server = survivor
        await client.ensure_open()
        await client.wait_for(completed_run(ack["run_id"]))
        logged = cluster.logged_events(thread_id)
        assert_exact([client, watcher], logged)
        interrupted = next(e for e in logged if e["type"] == "tool_executing")
        call_id = interrupted["data"]["tool_call_id"]
        pair = [e for e in logged if e["data"].get("tool_call_id") == call_id]
        assert [e["type"] for e in pair] == ["tool_executing", "tool_completed"]
        assert pair[1]["data"]["error"]["code"] == "interrupted"
        run = query(
            database_url,
            "SELECT status, error_code, attempt FROM agents_agentrun WHERE id = %s",
            uuid.UUID(ack["run_id"]),
        )
        assert run == [("completed", "", 2)]
        # The dead worker's socket is closed out in the state log by the survivor.
        old_connection = uuid.UUID(client.frames[0]["connection_id"])
        reason = await poll_closed(database_url, old_connection, timeout=15)
        assert "stopped heartbeating" in reason, reason
        record(
            capsys,
            "worker_killed",
            runs=1,
            events=len(logged),
            received_before_kill=seen_before,
            resumed_after_seq=resumed_after,
            lost=0,
            doubled=0,
            run_continued_after_s=round(continued_after, 2),
            run_stale_after_s=RUN_STALE_AFTER,
        )


async def test_cut_tcp_connection_is_closed_out_and_the_resume_gets_everything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A client whose TCP connection is reset mid-run, without a close frame."""
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(database_url=database_url, redis_url=REDIS_URL, env=CHAOS_ENV) as cluster,
    ):
        token = cluster.make_users("cut", 1)[0]
        thread_id = cluster.new_thread(token)
        client = Socket(cluster[0], thread_id, token=token)
        await client.ensure_open()
        connection_id = uuid.UUID(client.frames[0]["connection_id"])
        ack = await client.ask("wait 2 seconds and what is 3*3")
        await client.wait_for(lambda f: f.get("type") == "tool_executing")
        seen_before = len(client.events)
        client.abort()
        reason = await poll_closed(database_url, connection_id, timeout=15)
        ((state, close_code),) = query(
            database_url,
            "SELECT state, close_code FROM chat_connection WHERE id = %s",
            connection_id,
        )
        assert (state, close_code) == ("CLOSED", 1006), (state, close_code, reason)
        await client.ensure_open()
        await client.wait_for(completed_run(ack["run_id"]))
        logged = cluster.logged_events(thread_id)
        assert_exact([client], logged)
        assert logged[-1]["data"]["status"] == "completed" and "9" in logged[-1]["data"]["text"]
        record(
            capsys,
            "tcp_cut",
            runs=1,
            events=len(logged),
            received_before_cut=seen_before,
            lost=0,
            doubled=0,
            state_log_close_code=close_code,
            state_log_reason=reason,
        )


async def test_postgres_unreachable_fails_loudly_and_recovers_by_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The workers reach PostgreSQL through a proxy that the test cuts for a few seconds."""
    require_redis()
    require_postgres()
    outage = 4.0
    with postgres_database() as direct_url:
        parts = urllib.parse.urlsplit(direct_url)
        proxy = TcpProxy(parts.port or 5432).start()
        proxied_url = urllib.parse.urlunsplit(
            parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}")
        )
        try:
            with running_cluster(
                database_url=proxied_url,
                redis_url=REDIS_URL,
                env={**CHAOS_ENV, "RUN_STALE_AFTER": "15", "WS_AUTH_TIMEOUT": "3"},
            ) as cluster:
                await _postgres_outage(cluster, proxy, direct_url, outage, capsys)
        finally:
            proxy.close()


async def _postgres_outage(
    cluster: Any, proxy: TcpProxy, direct_url: str, outage: float, capsys: Any
) -> None:
    token = cluster.make_users("pg", 1)[0]
    thread_id = cluster.new_thread(token)
    client = Socket(cluster[0], thread_id, token=token)
    await client.ensure_open()
    ack = await client.ask("wait 2 seconds")
    await client.wait_for(lambda f: f.get("type") == "tool_executing")
    proxy.cut()
    cut_at = time.monotonic()
    # A new socket while the database is unreachable: the error frame, then 4503.
    newcomer = Socket(cluster[1], thread_id, token=token)
    refusal = await newcomer.open()
    assert (refusal["type"], refusal["code"], refusal["close_code"]) == (
        "error",
        "unavailable",
        4503,
    ), refusal
    assert await newcomer.wait_closed(10) == 4503
    await asyncio.sleep(max(0.0, outage - (time.monotonic() - cut_at)))
    proxy.restore()
    restored_at = time.monotonic()
    done = await client.follow(completed_run(ack["run_id"]), timeout=60)
    assert done["data"]["status"] == "failed"
    run_events = [e for e in client.events if e["run_id"] == ack["run_id"]]
    error = next(e for e in run_events if e["type"] == "agent_error")
    assert (error["data"]["code"], error["data"]["retryable"]) == ("unavailable", True)
    # Recovery by itself: a new run on the same thread completes.
    after = await ask_resuming(client, "what is 5*5")
    await client.follow(completed_run(after["run_id"]), timeout=60)
    recovered_after = time.monotonic() - restored_at
    logged = cluster.logged_events(thread_id)
    assert_exact([client], logged)
    assert logged[-1]["data"]["status"] == "completed" and "25" in logged[-1]["data"]["text"]
    # Nothing half written: every run is terminal, in the runs table and in the log.
    runs = query(
        direct_url,
        "SELECT id, status, error_code FROM agents_agentrun WHERE thread_id = %s",
        uuid.UUID(thread_id),
    )
    assert sorted((str(r), s, c) for r, s, c in runs) == sorted(
        [(ack["run_id"], "failed", "unavailable"), (after["run_id"], "completed", "")]
    )
    assert set(by_run(logged)) == {ack["run_id"], after["run_id"]}
    # Loud: in the logs and in the metrics.
    assert "database failure during run" in cluster[0].log_text()
    assert "database unavailable during socket authentication" in cluster[1].log_text()
    assert metric("netra_runs_total", cluster[0], status="failed") >= 1
    assert metric("netra_ws_connections_total", cluster[1], outcome="rejected") >= 1
    record(
        capsys,
        "postgres_outage",
        outage_s=outage,
        runs=len(runs),
        events=len(logged),
        lost=0,
        doubled=0,
        client_closes=client.close_codes,
        refused_while_down=[f.get("close_code") for f in client.refusals],
        time_to_recover_s=round(recovered_after, 2),
    )


@pytest.mark.parametrize("events_layer", ["core", "pubsub"])
async def test_capacity_overflow_every_socket_gets_all_1000_events_in_order(
    events_layer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """CHANNEL_CAPACITY=5 and a run of about 1,000 events. The worker that does not run it
    is paused for a moment in the middle of the burst (as a GC pause or a starved CPU would).
    With thread events on the core layer its queue overflows and the layer drops events
    silently; on pub/sub Redis holds them for the paused subscriber. Either way every socket
    of the thread, on both workers, gets each event once, in order."""
    require_redis()
    require_postgres()
    env = {**CHAOS_ENV, "CHANNEL_CAPACITY": "5", "AGENT_STREAM_CHUNK": "1"}
    env["REDIS_EVENTS_LAYER"] = events_layer
    env["AGENT_STREAM_DELAY"] = "0"
    with (
        postgres_database() as database_url,
        running_cluster(database_url=database_url, redis_url=REDIS_URL, env=env) as cluster,
    ):
        token = cluster.make_users("burst", 1)[0]
        thread_id = cluster.new_thread(token)
        sockets = [Socket(cluster[i % 2], thread_id, token=token) for i in range(6)]
        for socket in sockets:
            await socket.ensure_open()
        # 200 expressions: 400 tool events and 600 one-word answer deltas.
        text = ", ".join(f"{i}*1" for i in range(1, 201))
        ack = await sockets[0].ask(text)
        await sockets[0].wait_for(lambda f: f.get("seq", 0) >= 100)
        paused = cluster[1]
        assert paused.proc is not None
        os.killpg(paused.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(1.5)
        finally:
            os.killpg(paused.proc.pid, signal.SIGCONT)
        for socket in sockets:
            await socket.wait_for(completed_run(ack["run_id"]), timeout=120)
        logged = cluster.logged_events(thread_id)
        assert len(logged) >= 1000
        assert_exact(sockets, logged)
        assert all(not s.close_codes for s in sockets)
        filled = sum(metric("netra_event_gaps_filled_total", w) for w in cluster.workers)
        drops = cluster[0].log_text().count("over capacity in group")
        if events_layer == "core":
            assert filled > 0, "the layer dropped nothing: capacity 5 was not exceeded"
            assert drops > 0, "channels-redis reported no drop"
        record(
            capsys,
            "capacity_overflow" if events_layer == "core" else "capacity_overflow_pubsub",
            capacity=5,
            sockets=len(sockets),
            events=len(logged),
            delivered=sum(len(s.events) for s in sockets),
            filled_from_log=int(filled),
            group_sends_over_capacity=drops,
            lost=0,
            doubled=0,
        )
