"""`GET /api/threads/<id>/stream/`: the thread's run events as Server-Sent Events (thin:
authenticate, find the resume point, hand over to chat/sse.py)."""

import uuid

from django.http import HttpRequest, StreamingHttpResponse

from chat.api import api_view
from chat.auth import Principal
from chat.errors import bad_request
from chat.protocol import MAX_SEQ
from chat.sse import EventStream, ThreadRenderer
from chat.views import thread_for


def resume_point(request: HttpRequest) -> int | None:
    """Where a stream resumes: the `Last-Event-ID` header (an EventSource that reconnects
    sends it; it wins), else `?after_seq=`; None for neither. Raises bad_request (400)."""
    raw = request.headers.get("Last-Event-ID")
    name = "Last-Event-ID"
    if raw is None or not raw.strip():
        raw, name = request.GET.get("after_seq"), "after_seq"
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEQ:
        raise bad_request(f"{name} must be an integer >= 0.")
    return value


def sse_response(stream: EventStream) -> StreamingHttpResponse:
    """The streaming response of an EventStream: text/event-stream, never cached or
    buffered by a proxy."""
    response = StreamingHttpResponse(stream.chunks(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    return response


@api_view("GET")
async def api_thread_stream(
    request: HttpRequest, principal: Principal, thread_id: uuid.UUID
) -> StreamingHttpResponse:
    """The thread's events after the resume point, then live, as SSE."""
    after_seq = resume_point(request)
    await thread_for(principal, thread_id)
    stream = EventStream(
        thread_id=thread_id,
        token_id=principal.token_id,
        renderer=ThreadRenderer(),
        after_seq=after_seq,
        label="thread",
    )
    return sse_response(stream)
