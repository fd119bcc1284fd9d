"""The AG-UI endpoint: `POST /api/agui/` runs the agent for an AG-UI RunAgentInput and answers
with the run's AG-UI event stream; `GET /api/agui/runs/<runId>/` re-opens that stream after
`Last-Event-ID` (docs/protocol.md). Thin: validate, call the agent service, hand the
stream to chat/sse.py with an agents.agui.AguiRun as its renderer."""

import uuid
from typing import Any

from ag_ui.core import RunAgentInput, UserMessage
from channels.db import database_sync_to_async
from django.http import HttpRequest, StreamingHttpResponse

from agents import selectors
from agents.agui import AguiRun
from agents.errors import run_not_found
from chat import selectors as chat_selectors
from chat import services as chat_services
from chat.api import api_view
from chat.auth import Principal
from chat.errors import NetraError, bad_request, unavailable
from chat.ports import agent_service
from chat.protocol import MessageBody
from chat.runevents import EventType, RunState, fold_run
from chat.sse import EventStream
from chat.sse_views import resume_point, sse_response


def last_user_text(body: RunAgentInput) -> str:
    """The text of the last `user` message (its text parts joined); raises bad_request."""
    for message in reversed(body.messages):
        if isinstance(message, UserMessage):
            content = message.content
            if isinstance(content, str):
                return content
            return "".join(str(getattr(part, "text", "") or "") for part in content)
    raise bad_request("The input has no user message.")


def _validated(body: RunAgentInput) -> tuple[uuid.UUID, MessageBody]:
    """The thread id and the message (text, client_msg_id = runId) of an input, checked
    like any user message; raises bad_request."""
    try:
        thread_id = uuid.UUID(body.thread_id)
    except ValueError as exc:
        raise bad_request("threadId must be a UUID (an existing thread or a new one).") from exc
    try:
        message = MessageBody(text=last_user_text(body), client_msg_id=body.run_id)
    except ValueError as exc:  # pydantic's ValidationError
        raise bad_request(
            "The last user message must have 1 to 8000 characters and runId 1 to 64."
        ) from exc
    return thread_id, message


def _stream(
    principal: Principal,
    *,
    thread_id: uuid.UUID,
    renderer: AguiRun,
    run_id: uuid.UUID,
    after_seq: int | None = None,
    prelude: str = "",
) -> StreamingHttpResponse:
    """The run's AG-UI stream: after `after_seq`, or, for None, from the run's first event."""

    async def run_start() -> int | None:
        first = await database_sync_to_async(chat_selectors.run_first_seq)(
            thread_id=thread_id, run_id=run_id
        )
        return None if first is None else first - 1

    stream = EventStream(
        thread_id=thread_id,
        token_id=principal.token_id,
        renderer=renderer,
        after_seq=run_start if after_seq is None else after_seq,
        prelude=prelude,
        label="agui",
    )
    return sse_response(stream)


@api_view("POST", body=RunAgentInput)
async def api_agui_run(
    request: HttpRequest, principal: Principal, *, body: RunAgentInput
) -> StreamingHttpResponse:
    """Starts (or, for a runId seen before, attaches to) a run; answers its AG-UI stream."""
    service = agent_service()
    if service is None:
        raise unavailable("The agent service is not running; retry shortly.")
    thread_id, message = _validated(body)
    await database_sync_to_async(chat_services.thread_get_or_create)(
        thread_id=thread_id, owner=principal.user, title=message.text[:60]
    )
    try:
        result = await service.submit(
            thread_id=thread_id,
            user=principal.user,
            text=message.text,
            client_msg_id=message.client_msg_id,
        )
    except NetraError as err:
        raise err.with_ref(body.run_id) from err
    renderer = AguiRun(
        thread_id=body.thread_id, run_id=body.run_id, netra_run_id=str(result.run_id)
    )
    return _stream(principal, thread_id=thread_id, renderer=renderer, run_id=result.run_id)


def _text_message_id(events: list[dict[str, Any]]) -> str | None:
    for event in events:
        if event["type"] == EventType.PARTIAL_RESULT:
            return str(event["data"].get("message_id"))
    return None


@api_view("GET")
async def api_agui_rejoin(
    request: HttpRequest, principal: Principal, run_id: str
) -> StreamingHttpResponse:
    """Re-opens a run's AG-UI stream after `Last-Event-ID` (or `?after_seq=`): first
    RUN_STARTED and the START of every tool call and message still open at that point;
    without either, the whole run's stream again."""
    after_seq = resume_point(request)
    found = await database_sync_to_async(selectors.run_of_client_msg)(
        user=principal.user, client_msg_id=run_id
    )
    if found is None:
        raise run_not_found()
    thread_id, netra_run_id = found
    renderer = AguiRun(thread_id=str(thread_id), run_id=run_id, netra_run_id=str(netra_run_id))
    if after_seq is None:
        return _stream(principal, thread_id=thread_id, renderer=renderer, run_id=netra_run_id)
    had = await database_sync_to_async(selectors.run_events_through)(
        thread_id=thread_id, run_id=netra_run_id, seq=after_seq
    )
    state: RunState = fold_run(had)
    prelude = renderer.reopen(state, text_message_id=_text_message_id(had), seq=after_seq)
    return _stream(
        principal,
        thread_id=thread_id,
        renderer=renderer,
        run_id=netra_run_id,
        after_seq=after_seq,
        prelude=prelude,
    )
