"""Runs that outlive their worker, with real processes: drain on SIGTERM/SIGINT, kill -9
mid-tool and mid-answer, a stalled worker fenced, a rolling restart under load, and
`make run`'s single process stopped with Ctrl-C and started again.

Timings are short (RUN_STALE_AFTER 2 s, SHUTDOWN_GRACE_SECONDS 1 s, sweeps every 0.5 s).
The figures go to test-output/reliability.json and docs/reliability.md.
"""

import asyncio
import os
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.invariants import by_run, run_violations
from chat.management.commands.run_cluster import worker_command
from tests.cluster import (
    FAST_HOUSEKEEPING,
    REDIS_URL,
    Cluster,
    Worker,
    postgres_database,
    query,
    record,
    require_postgres,
    require_redis,
    running_cluster,
)
from tests.helpers import metric
from tests.servers import Server, free_port
from tests.sockets import Socket, completed_run, delivery_faults

pytestmark = [pytest.mark.timeout(120)]

RUN_STALE_AFTER = 2.0
GRACE = 1.0
ENV = {
    "RUN_STALE_AFTER": str(RUN_STALE_AFTER),
    "SHUTDOWN_GRACE_SECONDS": str(GRACE),
    "PROCESS_STALE_AFTER": "3",
}
NO_FAULTS = dict.fromkeys(("lost", "doubled", "out_of_order", "unknown", "altered"), 0)


def is_resumed(frame: dict[str, Any]) -> bool:
    """The agent_thinking{resumed: true} of a continued run."""
    return frame.get("type") == "agent_thinking" and frame["data"].get("resumed") is True


def tool_pairs(events: list[dict[str, Any]], tool_call_id: str) -> list[str]:
    """The event types that name one tool call, in order."""
    return [e["type"] for e in events if e["data"].get("tool_call_id") == tool_call_id]


@pytest.fixture
def cluster3() -> Iterator[Cluster]:
    """Three daphne workers on the shared Redis and a fresh PostgreSQL database."""
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(
            database_url=database_url, redis_url=REDIS_URL, workers=3, env=ENV
        ) as cluster,
    ):
        yield cluster


@pytest.mark.redis
@pytest.mark.postgres
async def test_kill_9_mid_tool_and_mid_answer_the_run_continues_elsewhere(
    cluster3: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    token = cluster3.make_users("k9", 1)[0]
    figures: dict[str, Any] = {}
    for case, victim, text in (
        ("mid_tool", 0, "wait 3 seconds and what is 6*7"),
        ("mid_answer", 1, "hello"),
    ):
        thread_id = cluster3.new_thread(token, worker=2)
        client = Socket(cluster3[victim], thread_id, token=token)
        watcher = Socket(cluster3[2], thread_id, token=token)
        await client.ensure_open()
        await watcher.ensure_open()
        ack = await client.ask(text)
        if case == "mid_tool":
            await watcher.wait_for(lambda f: f.get("type") == "tool_executing")
        else:
            await watcher.wait_for(lambda f: f.get("type") == "partial_result")
        cluster3[victim].stop(signal.SIGKILL)
        killed_at = time.monotonic()
        await watcher.wait_for(is_resumed, timeout=20)
        first_continued = time.monotonic() - killed_at
        done = await watcher.wait_for(completed_run(ack["run_id"]), timeout=20)
        assert done["data"]["status"] == "completed", done
        client.server = cluster3[2]
        await client.follow(completed_run(ack["run_id"]))
        logged = cluster3.logged_events(thread_id)
        for socket in (client, watcher):
            assert delivery_faults(socket.events, logged) == NO_FAULTS
        assert run_violations(logged) == [], run_violations(logged)
        assert sum(1 for e in logged if is_resumed(e)) == 1
        if case == "mid_tool":
            interrupted = next(e for e in logged if e["type"] == "tool_executing")
            call_id = interrupted["data"]["tool_call_id"]
            assert tool_pairs(logged, call_id) == ["tool_executing", "tool_completed"]
            completion = next(
                e for e in logged if e["type"] == "tool_completed" and e["seq"] > interrupted["seq"]
            )
            assert completion["data"]["error"]["code"] == "interrupted"
            assert "`6*7` = 42." in done["data"]["text"]
        else:
            assert done["data"]["text"].count("I am the built-in offline agent.") == 1
        figures[f"{case}_first_continued_event_after_kill_s"] = round(first_continued, 2)
        await asyncio.gather(client.close(), watcher.close())
    record(
        capsys, "worker_killed_run_continued", runs=2, run_stale_after_s=RUN_STALE_AFTER, **figures
    )


@pytest.mark.redis
@pytest.mark.postgres
async def test_a_stalled_worker_is_fenced_after_its_run_was_adopted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(database_url=database_url, redis_url=REDIS_URL, env=ENV) as cluster,
    ):
        token = cluster.make_users("stall", 1)[0]
        thread_id = cluster.new_thread(token)
        stalled, survivor = cluster[0], cluster[1]
        client = Socket(stalled, thread_id, token=token)
        watcher = Socket(survivor, thread_id, token=token)
        await client.ensure_open()
        await watcher.ensure_open()
        ack = await client.ask("wait 1 seconds")
        await watcher.wait_for(lambda f: f.get("type") == "tool_executing")
        assert stalled.proc is not None
        os.killpg(stalled.proc.pid, signal.SIGSTOP)
        try:
            done = await watcher.wait_for(completed_run(ack["run_id"]), timeout=30)
        finally:
            os.killpg(stalled.proc.pid, signal.SIGCONT)
        assert done["data"]["status"] == "completed"
        # The woken worker's wait ends at once: its tool_completed must be refused.
        deadline = time.monotonic() + 10
        while metric("netra_runs_fenced_total", stalled) < 1:
            assert time.monotonic() < deadline, "the stalled worker was not fenced"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        logged = cluster.logged_events(thread_id)
        assert logged[-1]["type"] == "agent_completed", [e["type"] for e in logged]
        assert run_violations(logged) == [], run_violations(logged)
        assert "was taken over by another worker" in stalled.log_text()
        record(
            capsys,
            "worker_stalled_fenced",
            runs=1,
            events=len(logged),
            fenced=metric("netra_runs_fenced_total", stalled),
            events_after_completed=0,
        )
        await asyncio.gather(client.close(), watcher.close())


def one_server(kind: str) -> Server:
    """One server process on SQLite and the in-memory layer: daphne as `make run` starts
    it, or uvicorn as `run_cluster` does."""
    env = {**FAST_HOUSEKEEPING, **ENV}
    if kind == "daphne":
        return Server(env=env)
    workdir = Path(tempfile.mkdtemp(prefix="netra-uvicorn-"))
    port = free_port()
    worker = Worker(
        env=env,
        port=port,
        workdir=workdir,
        command=worker_command(
            server="uvicorn", host="127.0.0.1", port=port, max_message_bytes=131072
        ),
        server="uvicorn",
    )
    worker.env["DATABASE_URL"] = Server(env=env, workdir=workdir).env["DATABASE_URL"]
    return worker


@pytest.mark.parametrize(("kind", "sig"), [("daphne", signal.SIGINT), ("uvicorn", signal.SIGTERM)])
def test_single_process_restart_continues_the_run(
    kind: str, sig: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run` (one daphne, SQLite, in-memory layer) stopped with Ctrl-C (SIGINT) during
    a run and started again, and one uvicorn stopped with SIGTERM: the socket is closed
    with 4503, the run released, and the restarted process continues it at once."""
    server = one_server(kind).start()
    try:
        asyncio.run(_single_process_restart(server, sig, capsys))
    finally:
        server.stop()


async def _single_process_restart(
    server: Server, sig: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    token = server.make_user("restart")
    status, body = server.api("POST", "/api/threads/", token, {"title": "r"})
    assert status == 201, body
    thread_id = str(body["id"])
    client = Socket(server, thread_id, token=token)
    await client.ensure_open()
    ack = await client.ask("wait 3 seconds and what is 6*7")
    await client.wait_for(lambda f: f.get("type") == "tool_executing")
    stop_at = time.monotonic()
    await asyncio.to_thread(server.stop, sig)
    stopped_after = time.monotonic() - stop_at
    assert await client.wait_closed(5) == 4503, client.close_code
    assert client.frames[-1]["type"] == "error" and client.frames[-1]["code"] == "unavailable"
    assert "released" in server.log_text()
    await asyncio.to_thread(server.start)
    restarted_at = time.monotonic()
    done = await client.follow(completed_run(ack["run_id"]), timeout=30)
    assert done["data"]["status"] == "completed" and "`6*7` = 42." in done["data"]["text"]
    events = [e for e in client.events if e["run_id"] == ack["run_id"]]
    assert run_violations(events) == [], run_violations(events)
    assert sum(1 for e in events if is_resumed(e)) == 1
    resumed = next(e for e in events if is_resumed(e))
    record(
        capsys,
        f"single_process_restart_{Path(server.command()[0]).name}",
        runs=1,
        stopped_after_s=round(stopped_after, 2),
        resumed_seq=resumed["seq"],
        completed_after_restart_s=round(time.monotonic() - restarted_at, 2),
    )
    await client.close()


# --- rolling restart under load ----------------------------------------------------------------

CLIENTS = 6
RUNS_EACH = 4
# Each run waits longer than the grace, and the clients start staggered over most of a
# run, so that at each SIGTERM some runs finish within the grace and others are released.
RUN_WAIT = 3
STAGGER = 0.4


async def _client(cluster: Cluster, token: str, index: int, out: dict[str, Any]) -> None:
    """Asks RUNS_EACH questions in turn, failing over to a live worker whenever its socket
    is closed (a draining worker closes it with 4503)."""
    thread_id = cluster.new_thread(token, worker=index % 2)
    socket = Socket(cluster[index % 2], thread_id, token=token)
    out[thread_id] = socket
    await asyncio.sleep(index * STAGGER)
    for n in range(RUNS_EACH):
        client_msg_id = uuid.uuid4().hex
        text = f"wait {RUN_WAIT} seconds and what is {index}*{n + 2}"
        ack = None
        for _ in range(40):
            await _open_somewhere(cluster, socket)
            try:
                ack = await socket.ask(text, client_msg_id)
                break
            except AssertionError:
                if socket.is_open:
                    raise
        assert ack is not None
        while True:
            await _open_somewhere(cluster, socket)
            try:
                await socket.wait_for(completed_run(ack["run_id"]), timeout=40)
                break
            except AssertionError as exc:
                if socket.is_open:
                    raise AssertionError(
                        f"{exc}; on port {socket.server.port}, closes {socket.close_codes}"
                    ) from exc


async def _open_somewhere(cluster: Cluster, socket: Socket) -> None:
    tries = 0
    while not socket.is_open:
        worker = cluster[tries % 2] if tries else socket.server
        tries += 1
        if worker.proc is None or worker.proc.poll() is not None:
            await asyncio.sleep(0.1)
            continue
        socket.server = worker
        try:
            await socket.ensure_open(timeout=3)
        except AssertionError:
            await asyncio.sleep(0.2)


async def _restart_in_turn(cluster: Cluster, signalled: list[float]) -> list[float]:
    """SIGTERM to each worker in turn, started again once it has exited; returns how long
    each took to stop, and appends the wall-clock time of each signal to `signalled`."""
    stopped = []
    for index in (0, 1):
        await asyncio.sleep(2.0)
        began = time.monotonic()
        signalled.append(time.time())
        await asyncio.to_thread(cluster[index].stop, signal.SIGTERM)
        stopped.append(round(time.monotonic() - began, 2))
        await asyncio.to_thread(cluster[index].start)
    return stopped


@pytest.mark.redis
@pytest.mark.postgres
async def test_rolling_restart_under_load_loses_no_run(capsys: pytest.CaptureFixture[str]) -> None:
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(database_url=database_url, redis_url=REDIS_URL, env=ENV) as cluster,
    ):
        tokens = cluster.make_users("roll", CLIENTS)
        sockets: dict[str, Any] = {}
        clients = [_client(cluster, token, i, sockets) for i, token in enumerate(tokens)]
        signalled: list[float] = []
        *_, stop_times = await asyncio.wait_for(
            asyncio.gather(*clients, _restart_in_turn(cluster, signalled)), timeout=100
        )
        runs, continued, delays = 0, 0, []
        for thread_id, socket in sockets.items():
            logged = cluster.logged_events(thread_id)
            assert delivery_faults(socket.events, logged) == NO_FAULTS
            for run_id, events in by_run(logged).items():
                runs += 1
                assert run_violations(events) == [], (run_id, run_violations(events))
                assert events[-1]["data"]["status"] == "completed", events[-1]
                assert not any(e["type"] == "agent_error" for e in events)
                if any(is_resumed(e) for e in events):
                    continued += 1
                    delays.append(_time_to_continue(database_url, run_id, signalled))
        assert runs == CLIENTS * RUNS_EACH
        assert continued >= 1, "no run was active past the grace at either SIGTERM"
        drained = [
            line
            for w in cluster.workers
            for line in w.log_text().splitlines()
            if "drained:" in line
        ]
        finished_in_grace = sum(_field(line, "finished_in_grace") for line in drained)
        released = sum(_field(line, "released") for line in drained)
        active = sum(_field(line, "active") for line in drained)
        assert len(drained) == 2, drained
        record(
            capsys,
            "rolling_restart",
            runs=runs,
            lost=0,
            doubled=0,
            agent_errors=0,
            continued=continued,
            active_at_sigterm=active,
            finished_in_grace=finished_in_grace,
            released=released,
            grace_s=GRACE,
            worker_stop_s=stop_times,
            # from the SIGTERM (the grace included) to the run's resumed agent_thinking
            time_to_continue_p50_s=round(statistics.median(delays), 2) if delays else None,
            time_to_continue_p99_s=round(_p99(delays), 2) if delays else None,
        )
        for socket in sockets.values():
            await socket.close()


def _field(line: str, name: str) -> int:
    """Reads `'name': N` from a drain summary line of a worker's log."""
    marker = f"'{name}': "
    at = line.index(marker) + len(marker)
    return int(line[at:].split(",")[0].split("}")[0])


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _time_to_continue(database_url: str, run_id: str, signalled: list[float]) -> float:
    """Seconds from the SIGTERM before a run's resumed agent_thinking to that event."""
    rows = query(
        database_url,
        "SELECT created_at FROM chat_event WHERE run_id = %s AND type = 'agent_thinking' "
        "AND data->>'resumed' = 'true' ORDER BY seq LIMIT 1",
        uuid.UUID(run_id),
    )
    at: float = rows[0][0].timestamp()
    return at - max(t for t in signalled if t <= at)
