"""The run API: post a message, cancel a run (thin: validate, call the service)."""

import hmac
import uuid

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from pydantic import ValidationError

from agents.health import check_event_flow
from chat.api import api_view, authenticate_request, error_response, json_body
from chat.auth import Principal
from chat.errors import NetraError, forbidden, unavailable
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
        raise err.with_ref(body.client_msg_id) from err
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
    try:
        await service.cancel(run_id=run_id, user=principal.user)
    except NetraError as err:
        raise err.with_ref(str(run_id)) from err
    return JsonResponse({"run_id": str(run_id), "status": "cancelling"}, status=202)


async def _health_caller_allowed(request: HttpRequest) -> bool:
    if settings.DEBUG:
        return True
    offered = request.headers.get("X-Health-Token", "")
    if settings.HEALTHCHECK_TOKEN and offered:
        return hmac.compare_digest(offered, settings.HEALTHCHECK_TOKEN)
    principal = await authenticate_request(request)
    return bool(principal.user.is_staff)


async def healthz_events(request: HttpRequest) -> JsonResponse:
    """A synthetic run through the real pipeline: 200 with timings, or 503 naming the
    first missing event."""
    try:
        if not await _health_caller_allowed(request):
            raise forbidden("Only staff or the health-check token may run the event check.")
    except NetraError as err:
        return error_response(err)
    service = agent_service()
    if service is None:
        return JsonResponse(
            {"status": "fail", "missing": "agent_started", "detail": "no agent service"},
            status=503,
        )
    result = await check_event_flow(service)
    return JsonResponse(result.as_json(), status=200 if result.ok else 503)
