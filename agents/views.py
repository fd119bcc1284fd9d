"""The run API: post a message, cancel a run (thin: validate, call the service)."""

import hmac
import logging
import uuid

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse

from agents.health import FlowResult, check_event_flow
from agents.registry import AGENTS
from agents.tools import REGISTRY
from chat.api import api_view, authenticate_request, error_response
from chat.auth import Principal
from chat.errors import NetraError, forbidden, unavailable
from chat.ports import agent_service
from chat.protocol import ApprovalBody, MessageBody
from chat.views import thread_for

logger = logging.getLogger("netra.health")


@api_view("POST", body=MessageBody)
async def api_post_message(
    request: HttpRequest, principal: Principal, thread_id: uuid.UUID, *, body: MessageBody
) -> JsonResponse:
    """Starts a run for a message: 202 {message_id, run_id, duplicate}."""
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


@api_view("POST", body=ApprovalBody)
async def api_answer_approval(
    request: HttpRequest, principal: Principal, approval_id: uuid.UUID, *, body: ApprovalBody
) -> JsonResponse:
    """Answers an approval: 202 {approval_id, decision}; the run goes on and its
    approval_resolved follows. 409 approval_resolved if answered already; 404 if not the
    caller's."""
    service = agent_service()
    if service is None:
        raise unavailable("The agent service is not running; retry shortly.")
    try:
        await service.resolve_approval(
            approval_id=approval_id,
            user=principal.user,
            decision=body.decision,
            comment=body.comment,
        )
    except NetraError as err:
        raise err.with_ref(str(approval_id)) from err
    return JsonResponse({"approval_id": str(approval_id), "decision": body.decision}, status=202)


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
    except DatabaseError as exc:  # the credential lookup needs the database: it is down
        logger.warning("event-flow check: the caller could not be authenticated: %s", exc)
        return _failed_check(
            "database", f"the caller could not be authenticated: {type(exc).__name__}: {exc}"
        )
    service = agent_service()
    if service is None:
        return _failed_check("agent_service", "no agent service")
    result = await check_event_flow(service)
    return JsonResponse(result.as_json(), status=200 if result.ok else 503)


def _failed_check(check: str, detail: str) -> JsonResponse:
    """The 503 of a dependency that failed before the probe run could start, naming it."""
    body = FlowResult(ok=False, missing="agent_started", detail=detail).as_json()
    return JsonResponse({**body, "check": check}, status=503)


@api_view("GET")
async def api_agents(request: HttpRequest, principal: Principal) -> JsonResponse:
    """The agents a thread may choose, with the tools each may call and their schemas."""
    return JsonResponse({"agents": AGENTS.describe(REGISTRY)})
