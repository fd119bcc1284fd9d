"""Operations: health endpoints, metrics, the connection reaper, Sentry, structured logs."""

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.db import OperationalError
from django.test import AsyncClient, Client
from django.utils import timezone

from chat.connections import WORKER_ID, process_heartbeat, reap_connections
from chat.models import Connection, ConnectionStateLog, ServerProcess
from netra_site.logs import JsonFormatter
from tests import helpers
from tests.helpers import metric

pytestmark = [pytest.mark.django_db(transaction=True)]


# --- /readyz ------------------------------------------------------------------------------


async def test_readyz_ok_on_a_healthy_server() -> None:
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "channel_layer": "ok"},
        "failed": [],
    }


async def test_readyz_503_when_redis_does_not_answer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0", "socket_timeout": 1}]},
        }
    }
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["channel_layer"] and body["checks"]["database"] == "ok"


# --- /healthz/events and check_event_flow --------------------------------------------------


@pytest.fixture
async def staff_token() -> str:
    def make() -> str:
        user = helpers.make_user("operator")
        user.is_staff = True
        user.save()
        return helpers.make_token(user)

    return await database_sync_to_async(make)()


async def test_event_flow_check_passes_with_timings(staff_token: str, service: Any) -> None:
    response = await AsyncClient().get(
        "/healthz/events", headers={"Authorization": f"Bearer {staff_token}"}
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert list(body["timings_ms"]) == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "partial_result",
        "agent_completed",
    ]


async def test_event_flow_check_names_the_missing_event_when_the_layer_is_broken(
    staff_token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat.layers import LocalChannelLayer

    async def broken_group_send(self: Any, group: str, message: Any) -> None:
        raise ConnectionError("layer down")

    monkeypatch.setattr(LocalChannelLayer, "group_send", broken_group_send)
    before = metric("netra_channel_layer_errors_total", operation="group_send")
    response = await AsyncClient().get(
        "/healthz/events", headers={"Authorization": f"Bearer {staff_token}"}
    )
    assert response.status_code == 503
    assert response.json()["missing"] == "agent_started"
    assert metric("netra_channel_layer_errors_total", operation="group_send") > before


async def test_event_flow_check_needs_staff_or_the_health_token(
    token: str, settings: Any, service: Any
) -> None:
    client = AsyncClient()
    assert (await client.get("/healthz/events")).status_code == 401
    response = await client.get("/healthz/events", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    settings.HEALTHCHECK_TOKEN = "probe-secret"
    wrong = await client.get("/healthz/events", headers={"X-Health-Token": "nope"})
    assert wrong.status_code == 403
    right = await client.get("/healthz/events", headers={"X-Health-Token": "probe-secret"})
    assert right.status_code == 200


def test_check_event_flow_command(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("check_event_flow")
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


# --- metrics --------------------------------------------------------------------------------


async def test_metrics_follow_a_run_a_refusal_and_a_gap_fill(
    thread: Any, token: str, service: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {
        "accepted": metric("netra_ws_connections_total", outcome="accepted"),
        "rejected": metric("netra_ws_connections_total", outcome="rejected"),
        "auth": metric("netra_ws_auth_failures_total", code="unauthenticated"),
        "emitted": metric("netra_events_emitted_total", type="agent_completed"),
        "delivered": metric("netra_events_delivered_total", type="agent_completed"),
        "runs": metric("netra_runs_total", status="completed"),
        "calls": metric("netra_tool_calls_total", tool="calculator", status="error"),
        "latency": metric("netra_event_delivery_seconds_count"),
        "gaps": metric("netra_event_gaps_filled_total"),
        "to_connected": metric(
            "netra_ws_state_transitions_total", from_state="AUTHENTICATING", to_state="CONNECTED"
        ),
    }
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 1/0"))
    await helpers.receive_until(comm, helpers.completed)
    await comm.disconnect()
    refused = helpers.communicator(thread.id, token="nt_bad")
    await refused.connect()
    await refused.receive_output(timeout=5)
    await refused.disconnect()
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "chat.layers.LocalChannelLayer", "CONFIG": {"capacity": 1}}
    }
    helpers.make_sockets_slow(monkeypatch)
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 2+2"))
    await service.wait_idle()
    await helpers.receive_until(comm, helpers.completed)
    await comm.disconnect()
    assert metric("netra_ws_connections_total", outcome="accepted") == before["accepted"] + 2
    assert metric("netra_ws_connections_total", outcome="rejected") == before["rejected"] + 1
    assert metric("netra_ws_auth_failures_total", code="unauthenticated") == before["auth"] + 1
    assert metric("netra_events_emitted_total", type="agent_completed") == before["emitted"] + 2
    assert metric("netra_events_delivered_total", type="agent_completed") == (
        before["delivered"] + 2
    )
    assert metric("netra_runs_total", status="completed") == before["runs"] + 2
    assert metric("netra_tool_calls_total", tool="calculator", status="error") == (
        before["calls"] + 1
    )
    assert metric("netra_event_delivery_seconds_count") > before["latency"]
    assert metric("netra_event_gaps_filled_total") > before["gaps"]
    assert (
        metric(
            "netra_ws_state_transitions_total", from_state="AUTHENTICATING", to_state="CONNECTED"
        )
        == before["to_connected"] + 2
    )
    assert metric("netra_runs_active") == 0


def test_metrics_endpoint_serves_loopback_only() -> None:
    ok = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert ok.status_code == 200
    text = ok.content.decode()
    for name in (
        "netra_ws_connections_current",
        "netra_ws_connections_total",
        "netra_events_emitted_total",
        "netra_event_delivery_seconds_bucket",
        "netra_runs_active",
        "netra_unpaired_tool_calls",
        "netra_channel_layer_errors_total",
        "netra_llm_requests_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text, name
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403


# --- the connection reaper ------------------------------------------------------------------


def test_reaper_closes_connections_of_a_dead_process_and_stuck_ones() -> None:
    long_ago = timezone.now() - timedelta(minutes=10)
    ServerProcess.objects.create(worker_id="dead:1:x", hostname="h", pid=1, heartbeat_at=long_ago)
    process_heartbeat()
    orphan = Connection.objects.create(state="CONNECTED", worker_id="dead:1:x")
    alive = Connection.objects.create(state="CONNECTED", worker_id=WORKER_ID)
    stuck = Connection.objects.create(
        state="AUTHENTICATING", worker_id=WORKER_ID, state_changed_at=long_ago
    )
    assert reap_connections(process_stale_after=30, stuck_after=60) == 2
    orphan.refresh_from_db()
    stuck.refresh_from_db()
    alive.refresh_from_db()
    assert (orphan.state, stuck.state, alive.state) == ("CLOSED", "CLOSED", "CONNECTED")
    log = list(
        ConnectionStateLog.objects.filter(connection=orphan).values_list(
            "from_state", "to_state", "reason"
        )
    )
    assert [(a, b) for a, b, _ in log] == [("CONNECTED", "FAILED"), ("FAILED", "CLOSED")]
    assert "dead:1:x stopped heartbeating" in log[0][2]
    stuck_log = ConnectionStateLog.objects.filter(connection=stuck).first()
    assert stuck_log is not None and "stuck in AUTHENTICATING" in stuck_log.reason
    assert reap_connections(process_stale_after=30, stuck_after=60) == 0


# --- Sentry ---------------------------------------------------------------------------------


def chain(event: dict[str, Any]) -> list[str]:
    return [value["type"] for value in event["exception"]["values"]]


async def test_tool_crash_reaches_sentry_once_chained_and_scrubbed(
    thread: Any, token: str, service: Any, sentry_events: list[dict[str, Any]]
) -> None:
    import dataclasses

    from agents import tools

    async def broken(args: dict[str, Any]) -> Any:
        raise KeyError("inner bug")

    registry = service.dispatcher.registry
    registry.register(dataclasses.replace(tools.CALCULATOR, func=broken))
    private = f"private-{uuid.uuid4().hex}"  # made at run time: the source is in tracebacks
    secret_text = f"what is 7*191 {private}"
    try:
        comm, _ = await helpers.open_socket(thread.id, token=token)
        await helpers.send(comm, helpers.message(secret_text))
        await helpers.receive_until(comm, helpers.completed)
        await comm.disconnect()
    finally:
        registry.register(tools.CALCULATOR)
    assert len(sentry_events) == 1
    event = sentry_events[0]
    assert chain(event) == ["KeyError", "ToolCrashedError"]
    assert event["tags"]["thread_id"] == str(thread.id) and event["tags"]["tool"] == "calculator"
    assert "run_id" in event["tags"]
    payload = json.dumps(event)
    assert private not in payload and token not in payload


async def test_database_failure_during_emit_reaches_sentry_once(
    thread: Any,
    token: str,
    service: Any,
    sentry_events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    helpers.fail_event_writes(
        monkeypatch, {"partial_result": 1}, "server closed the connection unexpectedly"
    )
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 3*3"))
    frames = await helpers.receive_until(comm, helpers.completed)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert [e["type"] for e in events][-2:] == ["agent_error", "agent_completed"]
    assert events[-2]["data"] == {
        "code": "unavailable",
        "retryable": True,
        "message": events[-2]["data"]["message"],
    }
    assert events[-1]["data"]["status"] == "failed"
    assert len(sentry_events) == 1
    assert chain(sentry_events[0]) == ["OperationalError", "EventLogError"]
    assert sentry_events[0]["tags"]["run_id"] == events[0]["run_id"]


def test_expected_failures_are_not_sent(sentry_events: list[dict[str, Any]]) -> None:
    response = Client().get("/api/threads/", headers={"Authorization": "Bearer nt_wrong"})
    assert response.status_code == 401
    assert sentry_events == []


def test_before_send_scrubs_tokens_cookies_and_text() -> None:
    from netra_site.sentry import make_before_send

    hook = make_before_send(send_message_text=False)
    event = hook(
        {
            "request": {
                "headers": {
                    "Authorization": "Bearer nt_abcdefghijklmnopqrstuvwxyz",
                    "Cookie": "sessionid=1",
                },
                "cookies": {"a": "b"},
            },
            "extra": {"text": "private", "note": "token nt_abcdefghijklmnopqrstuvwxyz0"},
        },
        {},
    )
    assert event is not None
    dumped = json.dumps(event)
    assert "nt_abc" not in dumped and "sessionid" not in dumped and "private" not in dumped


# --- structured logs ------------------------------------------------------------------------


def test_json_log_lines_carry_the_ids() -> None:
    record = logging.LogRecord(
        "netra.runs", logging.INFO, __file__, 1, "run %s done", ("r1",), None
    )
    record.run_id = "r1"
    record.thread_id = "t1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "run r1 done"
    assert (line["run_id"], line["thread_id"], line["level"]) == ("r1", "t1", "INFO")


# --- admin ----------------------------------------------------------------------------------


async def test_operations_page_shows_states_and_runs_the_check(
    thread: Any, token: str, service: Any
) -> None:
    def staff_client() -> Client:
        admin_user = helpers.make_user("root-op")
        admin_user.is_staff = True
        admin_user.is_superuser = True
        admin_user.save()
        client = Client()
        client.force_login(admin_user)
        return client

    refused = helpers.communicator(thread.id, token="nt_bad")
    await refused.connect()
    await refused.receive_output(timeout=5)
    await refused.disconnect()
    client = await database_sync_to_async(staff_client)()
    page = await database_sync_to_async(client.get)("/admin/ops/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Authentication failures" in html and "unauthenticated" in html
    index = await database_sync_to_async(client.get)("/admin/")
    assert 'href="/admin/ops/"' in index.content.decode()
    for path in (
        "/admin/chat/connection/",
        "/admin/chat/event/",
        "/admin/agents/agentrun/",
        "/admin/chat/apitoken/",
        "/admin/chat/thread/",
        "/admin/chat/message/",
    ):
        assert (await database_sync_to_async(client.get)(path)).status_code == 200, path


async def test_operations_page_is_for_staff_only(user: Any) -> None:
    def plain_client() -> Client:
        client = Client()
        client.force_login(user)
        return client

    client = await database_sync_to_async(plain_client)()
    response = await database_sync_to_async(client.get)("/admin/ops/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


async def test_state_log_rows_held_back_by_an_outage_are_written_later(
    thread: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat.connections import ConnectionTracker, flush_unflushed

    comm, first = await helpers.open_socket(thread.id, token=token)
    real_flush = ConnectionTracker.flush

    def down(self: ConnectionTracker) -> None:
        raise OperationalError("the database is down")

    monkeypatch.setattr(ConnectionTracker, "flush", down)
    await comm.disconnect()
    state = await database_sync_to_async(
        lambda: Connection.objects.get(pk=first["connection_id"]).state
    )()
    assert state == "CONNECTED"  # the close could not be written
    monkeypatch.setattr(ConnectionTracker, "flush", real_flush)
    assert await database_sync_to_async(flush_unflushed)() >= 1
    row = await database_sync_to_async(Connection.objects.get)(pk=first["connection_id"])
    assert (row.state, row.close_code) == ("CLOSED", 1000)


async def test_event_flow_check_is_503_when_the_database_is_down(
    staff_token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents import health

    def down() -> Any:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(health, "_probe_thread", down)
    response = await AsyncClient().get(
        "/healthz/events", headers={"Authorization": f"Bearer {staff_token}"}
    )
    assert response.status_code == 503
    body = response.json()
    assert body["missing"] == "agent_started" and "OperationalError" in body["detail"]


def test_outage_errors_reach_sentry_once_a_minute(
    sentry_events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat import errors

    monkeypatch.setattr(errors, "_last_sent", {})
    for _ in range(50):
        errors.report_exception(
            ConnectionError("redis down"), "group_send failed", throttle="group_send"
        )
    errors.report_exception(ConnectionError("other"), "group_add failed", throttle="group_add")
    assert [chain(e) for e in sentry_events] == [["ConnectionError"], ["ConnectionError"]]
