"""The operations page in the admin, with a button that runs the event-flow check."""

from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from agents.health import check_event_flow
from agents.ops import ops_overview
from chat.ports import agent_service


@staff_member_required
async def ops_page(request: HttpRequest) -> HttpResponse:
    """Connection states, auth failures, stuck connections, unpaired tool calls, failed
    runs; a POST runs the event-flow check and shows its result."""

    def read() -> dict[str, Any]:
        return {**ops_overview(), **admin.site.each_context(request), "title": "Operations"}

    context: dict[str, Any] = await database_sync_to_async(read)()
    if request.method == "POST":
        service = agent_service()
        context["check"] = (
            (await check_event_flow(service)).as_json()
            if service is not None
            else {"status": "fail", "detail": "no agent service"}
        )
    response = TemplateResponse(request, "admin/netra_ops.html", context)
    await sync_to_async(response.render)()
    return response
