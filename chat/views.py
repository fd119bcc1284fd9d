"""Web pages and the thread API; thin: parse, call a service or selector, render."""

import math
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from chat import lifecycle, selectors, services
from chat.api import ThreadBody, ThreadRenameBody, api_view, error_response
from chat.auth import Principal
from chat.errors import ErrorCode, NetraError, rate_limited, thread_not_found
from chat.events import events_after, isoformat, resume_recovered
from chat.models import Message, Thread, default_agent
from chat.ports import agent_description, agent_service, configured_agents
from chat.protocol import MAX_SEQ


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Creates an account and logs it in."""
    if request.user.is_authenticated:
        return redirect("thread-list")
    form: UserCreationForm[Any] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("thread-list")
    return render(request, "registration/signup.html", {"form": form})


LOCKOUT_MESSAGE = gettext_lazy(
    "Too many failed logins for this account or from this address. Try again in {minutes} minutes."
)


def login_locked_out(request: HttpRequest, *_: Any) -> HttpResponse:
    """The answer to a login while its username or address is locked out (django-axes calls
    it, for the web and the admin login): 429 `rate_limited` with Retry-After, as a page, or
    as the API's JSON error for a client that accepts JSON."""
    retry_after = settings.AXES_COOLOFF_TIME.total_seconds()
    err = rate_limited(
        str(LOCKOUT_MESSAGE).format(minutes=math.ceil(retry_after / 60)), retry_after=retry_after
    )
    if "application/json" in request.headers.get("Accept", ""):
        return error_response(err)
    response = render(
        request, "registration/locked_out.html", {"message": err.message}, status=err.status
    )
    response["Retry-After"] = str(round(retry_after))
    return response


@login_required
@require_http_methods(["GET", "POST"])
def thread_list(request: HttpRequest) -> HttpResponse:
    """Lists the user's threads; a POST creates one (with the agent picked, when more than
    one is configured) and opens it."""
    error, status = None, 200
    if request.method == "POST":
        try:
            thread = services.thread_create(
                owner=request.user,
                title=request.POST.get("title", ""),
                agent=request.POST.get("agent") or None,
            )
        except NetraError as err:
            error, status = err.message, err.status
        else:
            return redirect("thread-detail", thread_id=thread.id)
    query = request.GET.get("q", "")
    return render(
        request,
        "chat/thread_list.html",
        {
            "threads": selectors.thread_list(user=request.user, query=query),
            "query": query,
            "agents": configured_agents(),
            "default_agent": default_agent(),
            "error": error,
        },
        status=status,
    )


@login_required
def thread_detail(request: HttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """The chat page of one thread, its history rendered on the server."""
    thread = selectors.thread_get_for(thread_id=thread_id, user=request.user)
    if thread is None:
        return render(request, "chat/thread_missing.html", status=404)
    history = selectors.thread_history(thread=thread)
    return render(
        request,
        "chat/thread_detail.html",
        {
            "thread": thread,
            "threads": selectors.thread_list(user=request.user)[:50],
            "history": history,
            "resume_after": selectors.thread_resume_seq(thread=thread),
            "agent_description": agent_description(thread.agent),
            "several_agents": len(configured_agents()) > 1,
        },
    )


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


def thread_to_json(thread: Thread) -> dict[str, Any]:
    """Returns the API representation of a thread."""
    return {
        "id": str(thread.id),
        "title": thread.title,
        "created_at": isoformat(thread.created_at),
        "last_activity": isoformat(thread.last_activity),
        "last_seq": thread.last_seq,
        "agent": thread.agent,
    }


@api_view("GET", "POST", body=ThreadBody)
async def api_threads(
    request: HttpRequest, principal: Principal, body: ThreadBody | None = None
) -> JsonResponse:
    """GET lists the caller's threads; POST creates one (201)."""
    if body is not None:
        thread = await database_sync_to_async(services.thread_create)(
            owner=principal.user, title=body.title, agent=body.agent
        )
        return JsonResponse(thread_to_json(thread), status=201)

    def listing() -> list[dict[str, Any]]:
        return [thread_to_json(t) for t in selectors.thread_list(user=principal.user)]

    return JsonResponse({"threads": await database_sync_to_async(listing)()})


async def thread_for(principal: Principal, thread_id: uuid.UUID) -> Any:
    """Returns the caller's thread or raises the 404 that hides other users' threads."""
    thread = await database_sync_to_async(selectors.thread_get_for)(
        thread_id=thread_id, user=principal.user
    )
    if thread is None:
        raise thread_not_found()
    return thread


@api_view("GET", "PATCH", "DELETE", body={"PATCH": ThreadRenameBody})
async def api_thread(
    request: HttpRequest,
    principal: Principal,
    thread_id: uuid.UUID,
    body: ThreadRenameBody | None = None,
) -> HttpResponse:
    """GET returns the caller's thread JSON with its `pending_approvals`; PATCH renames it
    (200, the thread JSON); DELETE removes it with its runs and events (204) and closes its
    open sockets with 4404. Anyone else's: 404."""
    if request.method == "DELETE":
        await lifecycle.run_thread_delete(thread_id=thread_id, user=principal.user)
        return HttpResponse(status=204)
    thread = await thread_for(principal, thread_id)
    if request.method == "GET":
        service = agent_service()
        pending = [] if service is None else await service.pending_approvals(thread_id=thread.id)
        return JsonResponse({**thread_to_json(thread), "pending_approvals": pending})
    assert body is not None
    thread = await database_sync_to_async(services.thread_rename)(thread=thread, title=body.title)
    return JsonResponse(thread_to_json(thread))


def message_to_json(message: Message) -> dict[str, Any]:
    """Returns the API representation of a message."""
    return {
        "id": str(message.id),
        "role": message.role,
        "text": message.text,
        "run_id": str(message.run_id) if message.run_id else None,
        "created_at": isoformat(message.created_at),
    }


@api_view("GET")
async def api_thread_history(
    request: HttpRequest, principal: Principal, thread_id: uuid.UUID
) -> JsonResponse:
    """A page of the thread's messages before the message `before` (the newest without it):
    {messages (oldest first), has_more, events_after_seq}."""
    raw_before = request.GET.get("before")
    try:
        before = uuid.UUID(raw_before) if raw_before else None
    except ValueError as exc:
        raise NetraError(ErrorCode.BAD_REQUEST, "'before' must be a message id.") from exc
    thread = await thread_for(principal, thread_id)
    page = await database_sync_to_async(selectors.thread_history)(thread=thread, before=before)
    return JsonResponse(
        {
            "messages": [message_to_json(m) for m in page.messages],
            "has_more": page.has_more,
            "events_after_seq": page.events_after_seq,
        }
    )


@api_view("GET")
async def api_thread_events(
    request: HttpRequest, principal: Principal, thread_id: uuid.UUID
) -> JsonResponse:
    """The thread's logged events after `after_seq`: {events, last_seq, has_more,
    recovered}; recovered is false when events after `after_seq` were pruned."""
    after_seq = _int_param(request, "after_seq", default=0, low=0, high=MAX_SEQ)
    limit = _int_param(request, "limit", default=500, low=1, high=settings.EVENT_API_MAX_LIMIT)
    await thread_for(principal, thread_id)

    def read() -> tuple[list[dict[str, Any]], int]:
        page = events_after(thread_id=thread_id, after_seq=after_seq, limit=limit + 1)
        return page, selectors.thread_last_seq(thread_id=thread_id)

    page, last_seq = await database_sync_to_async(read)()
    first_seq = page[0]["seq"] if page else None
    return JsonResponse(
        {
            "events": page[:limit],
            "last_seq": last_seq,
            "has_more": len(page) > limit,
            "recovered": resume_recovered(
                after_seq=after_seq, first_seq=first_seq, last_seq=last_seq
            ),
        }
    )


def _int_param(request: HttpRequest, name: str, *, default: int, low: int, high: int | None) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise NetraError(ErrorCode.BAD_REQUEST, f"'{name}' must be an integer.") from exc
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise NetraError(ErrorCode.BAD_REQUEST, f"'{name}' must be {bound}.")
    return value
