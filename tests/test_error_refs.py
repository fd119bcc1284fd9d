"""HTTP errors name what they answer, as the socket's do: `ref` is the message's
client_msg_id or the cancelled run's id."""

import json
import uuid
from typing import Any

import pytest
from django.test import AsyncClient

from chat.errors import ErrorCode, NetraError

pytestmark = [pytest.mark.django_db(transaction=True)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_message(client: AsyncClient, thread: Any, token: str, text: str, msg_id: str) -> Any:
    return await client.post(
        f"/api/threads/{thread.id}/messages/",
        data=json.dumps({"text": text, "client_msg_id": msg_id}),
        content_type="application/json",
        headers=bearer(token),
    )


def test_http_body_carries_ref_only_when_set() -> None:
    err = NetraError(ErrorCode.BAD_REQUEST, "No.")
    assert err.body() == {"error": {"code": "bad_request", "message": "No."}}
    assert err.with_ref("m-1").body() == {
        "error": {"code": "bad_request", "message": "No.", "ref": "m-1"}
    }


async def test_http_message_error_names_its_client_msg_id(
    token: str, thread: Any, service: Any
) -> None:
    client = AsyncClient()
    first = await post_message(client, thread, token, "wait 10 seconds", "m-1")
    assert first.status_code == 202
    second = await post_message(client, thread, token, "hello", "m-2")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "run_in_progress"
    assert second.json()["error"]["ref"] == "m-2"
    cancel = await client.post(f"/api/runs/{first.json()['run_id']}/cancel/", headers=bearer(token))
    assert cancel.status_code == 202


async def test_http_cancel_error_names_its_run_id(token: str, service: Any) -> None:
    run_id = str(uuid.uuid4())
    response = await AsyncClient().post(f"/api/runs/{run_id}/cancel/", headers=bearer(token))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "run_not_found"
    assert response.json()["error"]["ref"] == run_id
