"""Runs over the socket: the exact event stream, invariants, idempotency, cancel, resume."""

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async

from agents.invariants import by_run, run_violations
from agents.models import AgentRun
from chat.models import Message
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def shape(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """A compact view of a run: type plus the field that tells steps apart."""
    out: list[tuple[str, Any]] = []
    for e in events:
        d = e["data"]
        detail = {
            "tool_executing": lambda d: (d["tool"], d["args"]),
            "tool_completed": lambda d: (d["tool"], d["status"]),
            "agent_completed": lambda d: d["status"],
            "agent_error": lambda d: d["code"],
        }.get(e["type"], lambda d: None)(d)
        out.append((e["type"], detail))
    return out


async def test_exact_sequence_for_three_calculations(thread: Any, token: str, service: Any) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 12*7 and 2**10 and 1/0", "m-1"))
    frames = await helpers.receive_until(comm, helpers.completed)
    ack = frames[0]
    assert ack["type"] == "ack" and ack["client_msg_id"] == "m-1" and ack["duplicate"] is False
    events = helpers.run_events(frames)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["run_id"] == ack["run_id"] and e["thread_id"] == str(thread.id) for e in events)
    partials = [s for s in shape(events) if s[0] == "partial_result"]
    assert shape(events) == [
        ("agent_started", None),
        ("agent_thinking", None),
        ("tool_executing", ("calculator", {"expression": "12*7"})),
        ("tool_completed", ("calculator", "ok")),
        ("tool_executing", ("calculator", {"expression": "2**10"})),
        ("tool_completed", ("calculator", "ok")),
        ("tool_executing", ("calculator", {"expression": "1/0"})),
        ("tool_completed", ("calculator", "error")),
        ("agent_thinking", None),
        *partials,
        ("agent_completed", "completed"),
    ]
    assert partials, "the answer streams as partial_result deltas"
    failed = events[7]["data"]
    assert failed["error"]["code"] == "division_by_zero" and "duration_ms" in failed
    assert events[3]["data"]["result"] == {"expression": "12*7", "value": 84}
    final = events[-1]["data"]
    assert "84" in final["text"] and "1024" in final["text"]
    assert "division by zero" in final["text"]
    assert events[0]["data"] == {"agent": "builtin", "message_id": ack["message_id"]}
    assert run_violations(events) == []
    await comm.disconnect()

    def stored() -> tuple[str, list[str]]:
        run = AgentRun.objects.get(pk=ack["run_id"])
        return run.status, list(
            Message.objects.filter(thread=thread).values_list("role", flat=True)
        )

    assert await database_sync_to_async(stored)() == ("completed", ["user", "assistant"])


async def test_unknown_request_gets_an_honest_answer(thread: Any, token: str, service: Any) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("write me a poem about autumn"))
    events = helpers.run_events(await helpers.receive_until(comm, helpers.completed))
    assert [e["type"] for e in events if e["type"] not in ("partial_result",)] == [
        "agent_started",
        "agent_thinking",
        "agent_completed",
    ]
    assert "arithmetic" in events[-1]["data"]["text"]
    assert run_violations(events) == []
    await comm.disconnect()


async def test_duplicate_submission_starts_no_second_run(
    thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 0.3 seconds", "same-id"))
    ack = await comm.receive_json_from(timeout=5)
    await helpers.send(comm, helpers.message("wait 0.3 seconds", "same-id"))
    frames = await helpers.receive_until(comm, lambda f: f.get("type") == "ack")
    retry = frames[-1]
    assert retry["duplicate"] is True
    assert (retry["message_id"], retry["run_id"]) == (ack["message_id"], ack["run_id"])
    frames += await helpers.receive_until(comm, helpers.completed)
    await service.wait_idle()
    await helpers.send(comm, helpers.message("wait 0.3 seconds", "same-id"))
    late = await comm.receive_json_from(timeout=5)
    assert late["duplicate"] is True and late["run_id"] == ack["run_id"]
    runs = await database_sync_to_async(AgentRun.objects.count)()
    assert runs == 1
    await comm.disconnect()


async def test_second_message_during_a_run_is_run_in_progress(
    thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 0.5 seconds", "first"))
    assert (await comm.receive_json_from(timeout=5))["type"] == "ack"
    await helpers.send(comm, helpers.message("what is 1+1", "second"))
    frames = await helpers.receive_until(comm, lambda f: f.get("type") == "error")
    assert frames[-1]["code"] == "run_in_progress" and frames[-1]["ref"] == "second"
    await helpers.receive_until(comm, helpers.completed)
    await comm.disconnect()


async def test_cancel_mid_run(thread: Any, token: str, service: Any) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 10 seconds"))
    ack = await comm.receive_json_from(timeout=5)
    await helpers.receive_until(comm, lambda f: f.get("type") == "tool_executing")
    await helpers.send(comm, {"type": "cancel", "run_id": ack["run_id"]})
    frames = await helpers.receive_until(comm, helpers.completed, timeout=5)
    events = helpers.run_events(frames)
    assert shape(events)[-2:] == [
        ("tool_completed", ("wait", "error")),
        ("agent_completed", "cancelled"),
    ]
    assert events[-2]["data"]["error"]["code"] == "cancelled"
    await helpers.send(comm, {"type": "cancel", "run_id": ack["run_id"]})
    late = await comm.receive_json_from(timeout=5)
    assert (late["code"], late["ref"]) == ("run_not_active", ack["run_id"])
    status = await database_sync_to_async(lambda: AgentRun.objects.get(pk=ack["run_id"]).status)()
    assert status == "cancelled"
    await comm.disconnect()


async def test_replay_from_zero_and_middle(thread: Any, token: str, service: Any) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 2+2"))
    live = helpers.run_events(await helpers.receive_until(comm, helpers.completed))
    await comm.disconnect()

    again, first = await helpers.open_socket(thread.id, token=token, query="after_seq=0")
    assert first["last_seq"] == len(live)
    frames = await helpers.receive_until(again, lambda f: f.get("type") == "resume_complete")
    assert helpers.run_events(frames) == live
    assert frames[-1] == {
        "type": "resume_complete",
        "after_seq": 0,
        "last_seq": len(live),
        "recovered": True,
    }
    await helpers.send(again, {"type": "resume", "after_seq": 3})
    frames = await helpers.receive_until(again, lambda f: f.get("type") == "resume_complete")
    assert helpers.run_events(frames) == live[3:]
    await again.disconnect()


async def test_disconnect_right_after_sending_then_resume(
    thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 6*7 and wait 0.2 seconds"))
    ack = await comm.receive_json_from(timeout=5)
    await comm.disconnect()
    await service.wait_idle()
    back, _ = await helpers.open_socket(thread.id, token=token, query="after_seq=0")
    frames = await helpers.receive_until(back, lambda f: f.get("type") == "resume_complete")
    events = helpers.run_events(frames)
    assert {e["run_id"] for e in events} == {ack["run_id"]}
    assert events[-1]["type"] == "agent_completed" and "42" in events[-1]["data"]["text"]
    assert run_violations(events) == []
    await back.disconnect()


async def test_resume_while_the_run_is_live_has_no_gap_or_double(
    thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 0.3 seconds and what is 3*3"))
    await helpers.receive_until(comm, lambda f: f.get("type") == "tool_executing")
    await comm.disconnect()
    back, _ = await helpers.open_socket(thread.id, token=token, query="after_seq=1")
    frames = await helpers.receive_until(back, helpers.completed)
    events = helpers.run_events(frames)
    assert [e["seq"] for e in events] == list(range(2, events[-1]["seq"] + 1))
    assert any(f["type"] == "resume_complete" for f in frames)
    await back.disconnect()


async def test_gap_fill_when_the_layer_drops_at_capacity(
    thread: Any, token: str, service: Any, settings: Any, slow_sockets: None
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "chat.layers.LocalChannelLayer", "CONFIG": {"capacity": 3}}
    }
    settings.AGENT_STREAM_CHUNK = 1  # one delta per word: a burst of events
    gaps_before = helpers.metric("netra_event_gaps_filled_total")
    comm, _ = await helpers.open_socket(thread.id, token=token)
    text = "what is " + " and ".join(f"{i}*{i}" for i in range(1, 13))
    await helpers.send(comm, helpers.message(text))
    await service.wait_idle()  # the whole burst is emitted while the socket reads nothing
    frames = await helpers.receive_until(comm, helpers.completed)
    events = helpers.run_events(frames)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(events) > 40
    assert run_violations(events) == []
    gaps = helpers.metric("netra_event_gaps_filled_total") - gaps_before
    assert gaps > 0, "the layer dropped nothing: this test did not exercise gap fill"
    await comm.disconnect()


async def test_tail_lost_by_the_layer_is_recovered(
    thread: Any, token: str, service: Any, settings: Any, slow_sockets: None
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "chat.layers.LocalChannelLayer", "CONFIG": {"capacity": 1}}
    }
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 1+1"))
    await service.wait_idle()  # only the first event fits; the rest, the tail too, is dropped
    frames = await helpers.receive_until(comm, helpers.completed, timeout=10)
    events = helpers.run_events(frames)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert run_violations(events) == []
    await comm.disconnect()


async def test_twenty_threads_at_once_stay_apart(user: Any, token: str, service: Any) -> None:
    threads = [await database_sync_to_async(helpers.make_thread)(user, f"t{i}") for i in range(20)]
    sockets = [(await helpers.open_socket(t.id, token=token))[0] for t in threads]
    for i, comm in enumerate(sockets):
        await helpers.send(comm, helpers.message(f"what is {i}+1000"))
    results = await asyncio.gather(
        *(helpers.receive_until(c, helpers.completed, timeout=30) for c in sockets)
    )
    for i, (thread, frames) in enumerate(zip(threads, results, strict=True)):
        events = helpers.run_events(frames)
        assert {e["thread_id"] for e in events} == {str(thread.id)}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert str(i + 1000) in events[-1]["data"]["text"]
        assert all(run_violations(run) == [] for run in by_run(events).values())
    for comm in sockets:
        await comm.disconnect()


async def test_resume_past_the_end_of_the_log_loses_no_later_event(
    thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, {"type": "resume", "after_seq": 500})
    done = await comm.receive_json_from(timeout=5)
    assert done == {"type": "resume_complete", "after_seq": 500, "last_seq": 0, "recovered": True}
    await helpers.send(comm, helpers.message("what is 4*4"))
    events = helpers.run_events(await helpers.receive_until(comm, helpers.completed))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "16" in events[-1]["data"]["text"]
    await comm.disconnect()
