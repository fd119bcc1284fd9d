"""Admin: runs with their attempts (which worker ran each part) and event timeline;
approvals, pending ones first, with their run, user and age."""

from django.contrib import admin
from django.db.models import F
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from agents.models import AgentRun, Approval, RunAttempt
from chat.admin import AppendOnlyAdmin
from chat.models import Event


@admin.register(AgentRun)
class AgentRunAdmin(AppendOnlyAdmin):
    """Runs, started from user messages and closed by the runtime only."""

    list_display = (
        "id",
        "thread",
        "user",
        "agent",
        "status",
        "error_code",
        "created_at",
        "finished_at",
        "worker_id",
        "attempt",
    )
    list_filter = ("status", "agent", "error_code")
    search_fields = ("=id", "=thread__id", "user__username", "error_code")
    readonly_fields = (
        "id",
        "thread",
        "user",
        "message",
        "assistant_message_id",
        "agent",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "worker_id",
        "cancel_requested",
        "error_code",
        "error_message",
        "attempt",
        "resumes",
        "released",
        "attempts",
        "timeline",
    )

    @admin.display(description="attempts")
    def attempts(self, obj: AgentRun) -> SafeString:
        """Each attempt of the run: which worker took it, when and why (submitted, or
        continued after a shutdown or a lost worker)."""
        rows = RunAttempt.objects.filter(run=obj).values_list(
            "number", "created_at", "worker_id", "reason"
        )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            (
                (number, created.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], worker, reason)
                for number, created, worker, reason in rows
            ),
        )
        return format_html(
            "<table><tr><th>attempt</th><th>since</th><th>worker</th><th>reason</th></tr>{}"
            "</table>",
            body,
        )

    @admin.display(description="event timeline")
    def timeline(self, obj: AgentRun) -> SafeString:
        """The run's events in seq order."""
        rows = (
            Event.objects.filter(thread_id=obj.thread_id, run_id=obj.id)
            .order_by("seq")
            .values_list("seq", "created_at", "type", "data")
        )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (seq, created.strftime("%H:%M:%S.%f")[:-3], type_, str(data)[:300])
                for seq, created, type_, data in rows
            ),
        )
        return format_html(
            "<table><tr><th>seq</th><th>time</th><th>type</th><th>data</th></tr>{}</table>", body
        )


@admin.register(Approval)
class ApprovalAdmin(AppendOnlyAdmin):
    """Approvals asked by tools; answered by the run's user only (web chat, socket, API)."""

    list_display = ("id", "run", "user", "tool", "reason", "age", "expires_at", "decision")
    list_filter = ("decision", "tool")  # decision "-" (empty): the pending ones
    ordering = (F("decision").asc(nulls_first=True), "-created_at")  # pending first
    list_select_related = ("run", "run__user")
    search_fields = ("=id", "=run__id", "run__user__username", "tool")
    readonly_fields = (
        "id",
        "run",
        "user",
        "tool_call_id",
        "tool",
        "args",
        "reason",
        "created_at",
        "expires_at",
        "decision",
        "comment",
        "resolved_at",
        "resolved_by",
    )

    @admin.display(description="user", ordering="run__user__username")
    def user(self, obj: Approval) -> str:
        """The run's user: the one who may answer."""
        return str(obj.run.user)

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: Approval) -> str:
        """How long it has been waiting (or waited, until its answer)."""
        return timesince(obj.created_at, obj.resolved_at or timezone.now())
