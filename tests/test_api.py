"""The JSON API: token or session (with CSRF), typed errors, other users' data hidden."""

import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, Client
from django.utils import timezone

from agents.invariants import run_violations
from chat.models import Message
from chat.selectors import HISTORY_PAGE
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(client: AsyncClient, path: str, body: Any, **headers: str) -> Any:
    return await client.post(
        path, data=json.dumps(body), content_type="application/json", headers=headers
    )


async def test_threads_create_and_list_with_token(token: str) -> None:
    client = AsyncClient()
    created = await post(client, "/api/threads/", {"title": "Quarterly numbers"}, **bearer(token))
    assert created.status_code == 201
    body = created.json()
    assert set(body) >= {"id", "title", "created_at", "last_seq"}
    assert (body["title"], body["last_seq"]) == ("Quarterly numbers", 0)
    listed = await client.get("/api/threads/", headers=bearer(token))
    assert [t["id"] for t in listed.json()["threads"]] == [body["id"]]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Bearer nt_nope"}, 401, "unauthenticated"),
        ({"Authorization": "Basic abc"}, 401, "unauthenticated"),
    ],
)
async def test_api_refuses_without_valid_credentials(
    headers: dict[str, str], status: int, code: str
) -> None:
    response = await AsyncClient().get("/api/threads/", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


async def test_session_post_needs_csrf(user: Any) -> None:
    def logged_in() -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    client = await database_sync_to_async(logged_in)()
    refused = await database_sync_to_async(client.post)(
        "/api/threads/", data="{}", content_type="application/json"
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    page = await database_sync_to_async(client.get)("/threads/")
    csrf = page.cookies["csrftoken"].value
    accepted = await database_sync_to_async(client.post)(
        "/api/threads/", data="{}", content_type="application/json", headers={"X-CSRFToken": csrf}
    )
    assert accepted.status_code == 201


async def test_bad_bodies_get_typed_400(token: str, thread: Any) -> None:
    client = AsyncClient()
    response = await client.post(
        "/api/threads/", data="{", content_type="application/json", headers=bearer(token)
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")
    response = await post(
        client, f"/api/threads/{thread.id}/messages/", {"text": ""}, **bearer(token)
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")
    response = await client.get(f"/api/threads/{thread.id}/events/?limit=0", headers=bearer(token))
    assert response.status_code == 400 and "limit" in response.json()["error"]["message"]
    response = await client.get(
        f"/api/threads/{thread.id}/events/?after_seq=x", headers=bearer(token)
    )
    assert response.status_code == 400
    response = await client.get(
        f"/api/threads/{thread.id}/events/?after_seq={10**20}", headers=bearer(token)
    )
    assert response.status_code == 400


async def test_message_run_and_events_over_http(token: str, thread: Any, service: Any) -> None:
    client = AsyncClient()
    path = f"/api/threads/{thread.id}/messages/"
    body = {"text": "what is 12*7 and 2**10 and 1/0", "client_msg_id": "http-1"}
    first = await post(client, path, body, **bearer(token))
    assert first.status_code == 202
    ids = first.json()
    assert ids["duplicate"] is False
    again = await post(client, path, body, **bearer(token))
    assert again.status_code == 202 and again.json() == {**ids, "duplicate": True}
    await service.wait_idle()
    everything = (
        await client.get(f"/api/threads/{thread.id}/events/", headers=bearer(token))
    ).json()
    events = everything["events"]
    assert everything["last_seq"] == len(events) and everything["has_more"] is False
    assert run_violations(events) == []
    assert "84" in events[-1]["data"]["text"] and "1024" in events[-1]["data"]["text"]
    middle = (
        await client.get(
            f"/api/threads/{thread.id}/events/?after_seq=3&limit=2", headers=bearer(token)
        )
    ).json()
    assert middle["events"] == events[3:5] and middle["has_more"] is True


async def test_cancel_over_http(token: str, thread: Any, service: Any) -> None:
    client = AsyncClient()
    started = await post(
        client,
        f"/api/threads/{thread.id}/messages/",
        {"text": "wait 10 seconds", "client_msg_id": "c-1"},
        **bearer(token),
    )
    run_id = started.json()["run_id"]
    comm, _ = await helpers.open_socket(thread.id, token=token, query="after_seq=0")
    await helpers.receive_until(comm, lambda f: f.get("type") == "tool_executing")
    response = await client.post(f"/api/runs/{run_id}/cancel/", headers=bearer(token))
    assert response.status_code == 202
    assert response.json() == {"run_id": run_id, "status": "cancelling"}
    frames = await helpers.receive_until(comm, helpers.completed, timeout=5)
    assert frames[-1]["data"]["status"] == "cancelled"
    await comm.disconnect()
    late = await client.post(f"/api/runs/{run_id}/cancel/", headers=bearer(token))
    assert (late.status_code, late.json()["error"]["code"]) == (409, "run_not_active")


async def test_other_users_threads_and_runs_are_404(
    token: str, thread: Any, other_user: Any, service: Any
) -> None:
    client = AsyncClient()
    started = await post(
        client,
        f"/api/threads/{thread.id}/messages/",
        {"text": "wait 0.2 seconds", "client_msg_id": "x"},
        **bearer(token),
    )
    run_id = started.json()["run_id"]
    intruder = await database_sync_to_async(helpers.make_token)(other_user)
    for method, path in [
        ("get", f"/api/threads/{thread.id}/events/"),
        ("post", f"/api/threads/{thread.id}/messages/"),
        ("post", f"/api/runs/{run_id}/cancel/"),
        ("get", f"/api/threads/{uuid.uuid4()}/events/"),
        ("post", f"/api/runs/{uuid.uuid4()}/cancel/"),
    ]:
        if method == "get":
            response = await client.get(path, headers=bearer(intruder))
        else:
            response = await post(
                client, path, {"text": "hi", "client_msg_id": "y"}, **bearer(intruder)
            )
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] in {"thread_not_found", "run_not_found"}
    listed = await client.get("/api/threads/", headers=bearer(intruder))
    assert listed.json() == {"threads": []}


async def test_wrong_method_is_405(token: str) -> None:
    response = await AsyncClient().delete("/api/threads/", headers=bearer(token))
    assert (response.status_code, response.json()["error"]["code"]) == (405, "method_not_allowed")


async def test_rename_a_thread_owner_only(token: str, thread: Any, other_user: Any) -> None:
    client = AsyncClient()
    path = f"/api/threads/{thread.id}/"
    renamed = await client.patch(
        path,
        data=json.dumps({"title": "  Renamed  "}),
        content_type="application/json",
        headers=bearer(token),
    )
    assert renamed.status_code == 200 and renamed.json()["title"] == "Renamed"
    listed = await client.get("/api/threads/", headers=bearer(token))
    assert [t["title"] for t in listed.json()["threads"]] == ["Renamed"]
    intruder = await database_sync_to_async(helpers.make_token)(other_user)
    for where in (path, f"/api/threads/{uuid.uuid4()}/"):
        refused = await client.patch(
            where,
            data=json.dumps({"title": "mine"}),
            content_type="application/json",
            headers=bearer(intruder),
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (404, "thread_not_found")
    for body in ({}, {"title": 3}):
        bad = await client.patch(
            path, data=json.dumps(body), content_type="application/json", headers=bearer(token)
        )
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")


async def test_history_pages_back_with_the_seq_its_runs_start_after(
    token: str, thread: Any, service: Any
) -> None:
    client = AsyncClient()
    for n in range(3):
        await post(
            client,
            f"/api/threads/{thread.id}/messages/",
            {"text": f"what is {n}+1", "client_msg_id": f"h{n}"},
            **bearer(token),
        )
        await service.wait_idle(timeout=20)
    newest = await client.get(f"/api/threads/{thread.id}/history/", headers=bearer(token))
    page = newest.json()
    assert [m["role"] for m in page["messages"]] == ["user", "assistant"] * 3
    assert page["has_more"] is False and page["events_after_seq"] == 0
    third = page["messages"][4]
    older = await client.get(
        f"/api/threads/{thread.id}/history/?before={third['id']}", headers=bearer(token)
    )
    body = older.json()
    assert [m["text"] for m in body["messages"] if m["role"] == "user"] == [
        "what is 0+1",
        "what is 1+1",
    ]
    events = await client.get(f"/api/threads/{thread.id}/events/", headers=bearer(token))
    starts = [e["seq"] for e in events.json()["events"] if e["type"] == "agent_started"]
    assert body["events_after_seq"] == starts[0] - 1
    bad = await client.get(f"/api/threads/{thread.id}/history/?before=x", headers=bearer(token))
    assert bad.status_code == 400
    gone = await client.get(f"/api/threads/{uuid.uuid4()}/history/", headers=bearer(token))
    assert gone.status_code == 404


async def test_history_pages_messages_of_one_clock_tick_once_each(token: str, thread: Any) -> None:
    def save_in_one_tick() -> list[str]:
        rows = Message.objects.bulk_create(
            Message(thread=thread, role=Message.Role.USER, text=f"m{n}")
            for n in range(HISTORY_PAGE + 5)
        )
        Message.objects.filter(thread=thread).update(created_at=timezone.now())
        return sorted(str(m.id) for m in rows)

    saved = await database_sync_to_async(save_in_one_tick)()
    client = AsyncClient()
    path = f"/api/threads/{thread.id}/history/"
    newest = (await client.get(path, headers=bearer(token))).json()
    older = (
        await client.get(f"{path}?before={newest['messages'][0]['id']}", headers=bearer(token))
    ).json()
    assert (len(newest["messages"]), newest["has_more"]) == (HISTORY_PAGE, True)
    assert (len(older["messages"]), older["has_more"]) == (5, False)
    assert sorted(m["id"] for m in older["messages"] + newest["messages"]) == saved
