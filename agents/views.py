"""The run API: post a message, cancel a run (thin: validate, call the service)."""

import uuid

from django.http import HttpRequest, JsonResponse
from pydantic import ValidationError

from chat.api import api_view, json_body
from chat.auth import Principal
from chat.errors import NetraError, unavailable
from chat.ports import agent_service
from chat.protocol import MessageBody, bad_request, describe_error
from chat.views import thread_for


@api_view("POST")
async def api_post_message(
    request: HttpRequest, principal: Principal, thread_id: uuid.UUID
) -> JsonResponse:
    """Starts a run for a message: 202 {message_id, run_id, duplicate}."""
    try:
        body = MessageBody.model_validate(json_body(request))
    except ValidationError as exc:
        raise bad_request(describe_error(exc)) from exc
    service = agent_service()
    if service is None:
        raise unavailable("The agent service is not running; retry shortly.")
    await thread_for(principal, thread_id)
    try:
        result = await service.submit(
            thread_id=thread_id,
            user=principal.user,
            text=body.text,
            client_msg_id=body.client_msg_id,
        )
    except NetraError as err:
        err.ref = body.client_msg_id
        raise
    return JsonResponse(
        {
            "message_id": str(result.message_id),
            "run_id": str(result.run_id),
            "duplicate": result.duplicate,
        },
        status=202,
    )


@api_view("POST")
async def api_cancel_run(
    request: HttpRequest, principal: Principal, run_id: uuid.UUID
) -> JsonResponse:
    """Asks a run to stop: 202 {run_id, status: cancelling}; 409 if it is not active."""
    service = agent_service()
    if service is None:
        raise unavailable("The agent service is not running; retry shortly.")
    await service.cancel(run_id=run_id, user=principal.user)
    return JsonResponse({"run_id": str(run_id), "status": "cancelling"}, status=202)
