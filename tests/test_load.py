"""Load: 500 concurrent sockets on two workers, runs going for NETRA_LOAD_SECONDS (60).

Every socket's stream is compared with the event log at the end: nothing lost, doubled,
out of order or altered; every run terminal, every tool call paired. The counts are
printed and kept in test-output/reliability.json.

Limits: the default per-user limits stay on (WS_MAX_SOCKETS_PER_USER=20,
WS_RATE_MESSAGES_PER_MINUTE=30), so the load is spread as real users would make it:
50 users with 2 threads each and 5 sockets per thread (10 sockets per user, on both
workers), each thread asking at most once every RUN_PACE seconds (about 27 a minute per user).
"""

import asyncio
import os
import resource
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agents.invariants import by_run, run_violations
from tests.cluster import (
    REDIS_URL,
    Cluster,
    postgres_database,
    query,
    record,
    require_postgres,
    require_redis,
    running_cluster,
)
from tests.helpers import metric
from tests.sockets import Socket, completed_run, delivery_faults

LOAD_SECONDS = float(os.environ.get("NETRA_LOAD_SECONDS", "60"))
USERS = 50
THREADS_PER_USER = 2
SOCKETS_PER_THREAD = 5
RUN_PACE = 4.5

pytestmark = [
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.timeout(int(LOAD_SECONDS) + 240),
]


def make_population(cluster: Cluster) -> list[tuple[str, list[str]]]:
    """Creates the users, a token and the threads of each, in one process."""
    script = (
        "from django.contrib.auth import get_user_model\n"
        "from chat.services import token_create\n"
        "from chat.services import thread_create\n"
        f"for i in range({USERS}):\n"
        "    user = get_user_model().objects.create_user(username=f'load{i}')\n"
        "    token = token_create(user=user, name='load')[1]\n"
        f"    threads = [str(thread_create(owner=user, title='load').id) "
        f"for _ in range({THREADS_PER_USER})]\n"
        "    print(token, *threads)\n"
    )
    lines = cluster[0].manage("shell", "-c", script).strip().splitlines()[-USERS:]
    return [(line.split()[0], line.split()[1:]) for line in lines]


def answers(client_msg_id: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate: the ack or error frame that answers a client message."""
    return lambda f: client_msg_id in (f.get("client_msg_id"), f.get("ref"))


def has_seq(seq: int) -> Callable[[dict[str, Any]], bool]:
    """A predicate: the run event with this seq."""
    return lambda f: f.get("seq") == seq


async def drive(sockets: list[Socket], deadline: float, stats: dict[str, int]) -> None:
    """Asks on the thread's first socket, paced, until the deadline; waits for each run."""
    sender = sockets[0]
    index = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        index += 1
        client_msg_id = uuid.uuid4().hex
        start = len(sender.frames)
        await sender.send(
            {
                "type": "user_message",
                "text": f"what is {index}*7 and {index}+{len(sockets)}",
                "client_msg_id": client_msg_id,
            }
        )
        answer = await sender.wait_for(answers(client_msg_id), start=start)
        if answer["type"] == "ack":
            stats["runs"] += 1
            await sender.wait_for(completed_run(answer["run_id"]), timeout=90)
        elif answer.get("code") == "rate_limited":
            stats["rate_limited"] += 1
            await asyncio.sleep(float(answer.get("retry_after", 1.0)))
        else:
            raise AssertionError(answer)
        await asyncio.sleep(max(0.0, started + RUN_PACE - time.monotonic()))


async def test_500_sockets_on_two_workers_lose_and_double_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_redis()
    require_postgres()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    with (
        postgres_database() as database_url,
        running_cluster(database_url=database_url, redis_url=REDIS_URL, workers=2) as cluster,
    ):
        population = make_population(cluster)
        threads: dict[str, list[Socket]] = {}
        for token, thread_ids in population:
            for thread_id in thread_ids:
                threads[thread_id] = [
                    Socket(cluster[i % 2], thread_id, token=token)
                    for i in range(SOCKETS_PER_THREAD)
                ]
        sockets = [s for group in threads.values() for s in group]
        connect_started = time.monotonic()
        for batch in range(0, len(sockets), 50):
            firsts = await asyncio.gather(*(s.open() for s in sockets[batch : batch + 50]))
            assert all(f["type"] == "connection_established" for f in firsts), firsts
        connected_in = time.monotonic() - connect_started
        stats = {"runs": 0, "rate_limited": 0}
        deadline = time.monotonic() + LOAD_SECONDS
        await asyncio.gather(*(drive(group, deadline, stats) for group in threads.values()))
        load_ended = time.monotonic()
        # Every socket catches up with its thread's log: the time to drain is measured.
        logs = {thread_id: cluster.logged_events(thread_id) for thread_id in threads}
        for thread_id, group in threads.items():
            last = logs[thread_id][-1]["seq"] if logs[thread_id] else 0
            await asyncio.gather(*(s.wait_for(has_seq(last)) for s in group))
        drained_in = time.monotonic() - load_ended
        totals = dict.fromkeys(("lost", "doubled", "out_of_order", "unknown", "altered"), 0)
        unpaired = violations = 0
        for thread_id, group in threads.items():
            for socket in group:
                for key, value in delivery_faults(socket.events, logs[thread_id]).items():
                    totals[key] += value
            for events in by_run(logs[thread_id]).values():
                problems = run_violations(events)
                violations += bool(problems)
                unpaired += sum("unpaired" in p or "without tool_executing" in p for p in problems)
        not_terminal = query(
            database_url,
            "SELECT count(*) FROM agents_agentrun WHERE status NOT IN "
            "('completed', 'failed', 'cancelled')",
        )[0][0]
        statuses = dict(
            query(database_url, "SELECT status, count(*) FROM agents_agentrun GROUP BY status")
        )
        closed = sum(1 for s in sockets if s.closed.is_set())
        event_count = sum(len(log) for log in logs.values())
        figures: dict[str, Any] = {
            "workers": len(cluster.workers),
            "users": USERS,
            "sockets": len(sockets),
            "seconds": LOAD_SECONDS,
            "runs": stats["runs"],
            "run_statuses": statuses,
            "events": event_count,
            "delivered": sum(len(s.events) for s in sockets),
            "expected_deliveries": sum(len(logs[t]) * len(g) for t, g in threads.items()),
            **totals,
            "unpaired": unpaired,
            "runs_violating_invariants": violations,
            "runs_not_terminal": not_terminal,
            "sockets_closed_during_load": closed,
            "rate_limited": stats["rate_limited"],
            "connect_500_s": round(connected_in, 2),
            "drain_after_load_s": round(drained_in, 2),
        }
        record(capsys, "load", **figures)
        assert totals == dict.fromkeys(totals, 0), figures
        assert (unpaired, violations, not_terminal, closed) == (0, 0, 0, 0), figures
        assert statuses == {"completed": stats["runs"]}, figures
        assert figures["delivered"] == figures["expected_deliveries"], figures
        # All 500 close at once: each worker leaves hundreds of groups concurrently (this
        # exhausted redis-py 8's default pool of 100 connections before REDIS_MAX_CONNECTIONS).
        await asyncio.gather(*(s.close() for s in sockets))
        layer_errors = sum(metric("netra_channel_layer_errors_total", w) for w in cluster.workers)
        assert layer_errors == 0, [w.log_tail() for w in cluster.workers]
        for worker in cluster.workers:
            assert "Traceback" not in worker.log_text(), worker.log_tail()
