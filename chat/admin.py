"""Admin: threads, messages, the event log, connections with their state log, API tokens."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from chat.models import ApiToken, Connection, ConnectionStateLog, Event, Message, Thread
from chat.services import token_revoke


class AppendOnlyAdmin(admin.ModelAdmin):
    """Shows records that are written by the application only and never rewritten: no add,
    change or delete, hence no bulk delete action either (a deleted event would leave a
    permanent seq gap; a deleted run or state log row would rewrite history)."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Rows are written by the application only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Rows are never rewritten."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Rows are never deleted here; nor, hence, is a thread that has some (its owner
        deletes it, with everything it holds)."""
        return False


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("created_at", "role", "text", "client_msg_id", "run_id")
    readonly_fields = fields
    can_delete = False


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "created_at", "last_activity", "last_seq", "is_probe")
    list_filter = ("is_probe",)
    search_fields = ("id", "title", "owner__username")
    readonly_fields = ("id", "created_at", "last_activity", "last_seq")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("created_at", "thread", "role", "short_text", "client_msg_id")
    list_filter = ("role",)
    search_fields = ("thread__id", "client_msg_id", "run_id")
    readonly_fields = ("id", "created_at")

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        """The first words of the message."""
        return obj.text[:80]


@admin.register(Event)
class EventAdmin(AppendOnlyAdmin):
    """The event log, written by the broadcaster only."""

    list_display = ("thread", "seq", "type", "run_id", "created_at")
    list_filter = ("type",)
    search_fields = ("=thread__id", "=run_id")
    ordering = ("-created_at",)
    readonly_fields = ("thread", "seq", "run_id", "type", "data", "created_at")


class ConnectionStateLogInline(admin.TabularInline):
    model = ConnectionStateLog
    extra = 0
    fields = ("created_at", "from_state", "to_state", "reason")
    readonly_fields = fields
    can_delete = False
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """State rows come from the state machine only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """State rows are never rewritten."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """State rows are never deleted."""
        return False


@admin.register(Connection)
class ConnectionAdmin(AppendOnlyAdmin):
    """Connections, recorded by the consumer, with their state log."""

    list_display = (
        "id",
        "user",
        "thread",
        "state",
        "close_code",
        "opened_at",
        "closed_at",
        "client_addr",
        "worker_id",
    )
    list_filter = ("state", "close_code")
    search_fields = ("=id", "user__username", "=thread__id", "client_addr")
    readonly_fields = (
        "id",
        "user",
        "thread",
        "requested_thread",
        "token",
        "state",
        "opened_at",
        "state_changed_at",
        "closed_at",
        "close_code",
        "client_addr",
        "user_agent",
        "worker_id",
    )
    inlines = [ConnectionStateLogInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "user__username", "name")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tokens are made by `manage.py create_api_token`, which shows the secret once."""
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        """Revokes tokens: they stop authenticating at once."""
        for token in queryset:
            token_revoke(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")
