"""The chat application: threads, the event log, sockets."""

from django.apps import AppConfig
from django.core import checks


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Registers the start-up checks and the hooks that close sockets whose session
        ended."""
        from chat import checks as chat_checks
        from chat import signals

        checks.register(chat_checks.check_channel_layer, checks.Tags.compatibility)
        checks.register(chat_checks.check_daphne_timers, checks.Tags.compatibility)
        signals.connect()
