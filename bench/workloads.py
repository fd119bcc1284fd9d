"""The workloads B and N both answer: turns of the built-in agent's question, and answers
streamed on a scripted model's schedule (bench/schedule.py). L has no user messages."""

import asyncio
import json
import time
from typing import Any

from bench import schedule
from bench.client import Socket, Target, close_all, open_socket, percentile
from bench.servers import cpu_seconds

TURN_TEXT = "what is 12*7 and 2**10"
TURN_TIMEOUT = 60.0


async def _open_kept(target: Target, threads: list[str]) -> list[Socket]:
    gate = asyncio.Semaphore(50)

    async def one(thread: str) -> Socket:
        async with gate:
            return await open_socket(target, thread, keep=True)

    return list(await asyncio.gather(*(one(t) for t in threads)))


async def _ask(sock: Socket, text: str, ref: str) -> float:
    """Sends one user message; returns when it was sent."""
    sock.frames.clear()
    sock.completed.clear()
    sent = time.time()
    await sock.conn.send(json.dumps({"type": "user_message", "text": text, "client_msg_id": ref}))
    return sent


async def turns(target: Target, *, threads: list[str], rounds: int) -> dict[str, Any]:
    """One socket per thread, each sending `rounds` messages one after another (the next
    when agent_completed of the last arrived); turn = user_message to agent_completed."""
    sockets = await _open_kept(target, threads)
    await asyncio.sleep(0.3)
    latencies: list[float] = []
    missing = 0

    async def one(index: int, sock: Socket) -> None:
        nonlocal missing
        for i in range(rounds):
            sent = await _ask(sock, TURN_TEXT, f"t{index}-{i}")
            try:
                await asyncio.wait_for(sock.completed.wait(), TURN_TIMEOUT)
            except TimeoutError:
                missing += 1
                return
            done = next(f["_at"] for f in sock.frames if f.get("type") == "agent_completed")
            latencies.append((done - sent) * 1000)

    cpu0 = cpu_seconds(target.server.pid)
    start = time.time()
    await asyncio.gather(*(one(i, s) for i, s in enumerate(sockets)))
    elapsed = time.time() - start
    cpu = cpu_seconds(target.server.pid) - cpu0
    await close_all(sockets)
    return {
        "sockets": len(threads),
        "rounds": rounds,
        "turns": len(latencies),
        "missing": missing,
        "turns_per_s": len(latencies) / elapsed if elapsed > 0 else float("nan"),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_per_turn_ms": cpu / len(latencies) * 1000 if latencies else float("nan"),
    }


async def streaming(target: Target, *, threads: list[str]) -> dict[str, Any]:
    """C concurrent answers (one socket per thread, all asked at once), each streamed at
    schedule.RATE chunks/s: lateness of each chunk (receipt minus the model's send time),
    the wait from sending to the first word, and chunks lost."""
    sockets = await _open_kept(target, threads)
    await asyncio.sleep(0.5)
    cpu0 = cpu_seconds(target.server.pid)
    sent = await asyncio.gather(
        *(_ask(s, f"{schedule.PREFIX} go", f"s{len(sockets)}-{i}") for i, s in enumerate(sockets))
    )
    start = time.time()
    waits = [s.completed.wait() for s in sockets]
    _, pending = await asyncio.wait(
        [asyncio.ensure_future(w) for w in waits], timeout=TURN_TIMEOUT + schedule.CHUNKS
    )
    for task in pending:
        task.cancel()
    finished = time.time()
    cpu = cpu_seconds(target.server.pid) - cpu0
    lateness: list[float] = []
    first: list[float] = []
    last: list[float] = []
    received = 0
    for sock, asked in zip(sockets, sent, strict=True):
        chunks = [f for f in sock.frames if f.get("type") == "partial_result"]
        stamps = [(f["_at"], schedule.sent_at(f["data"].get("text", ""))) for f in chunks]
        stamps = [(at, due) for at, due in stamps if due is not None]
        received += len(stamps)
        lateness += [(at - due) * 1000 for at, due in stamps]
        if stamps:
            first.append((stamps[0][0] - asked) * 1000)
            last.append((stamps[-1][0] - asked) * 1000)
    await close_all(sockets)
    expected = len(threads) * schedule.CHUNKS
    return {
        "c": len(threads),
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "unfinished": len(pending),
        "lateness_p50_ms": percentile(lateness, 50),
        "lateness_p99_ms": percentile(lateness, 99),
        "first_p50_ms": percentile(first, 50),
        "first_p99_ms": percentile(first, 99),
        "answer_p99_ms": percentile(last, 99),
        "seconds": finished - start,
        "cpu_per_chunk_ms": cpu / received * 1000 if received else float("nan"),
    }
