"""`manage.py reap_runs`: closes runs whose worker stopped heartbeating (for cron)."""

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from agents.runtime import reap_stale_runs
from chat.broadcaster import Broadcaster
from chat.connections import WORKER_ID


class Command(BaseCommand):
    help = "Ends every run whose heartbeat is older than RUN_STALE_AFTER (agent_error worker_lost)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Takes an optional staleness bound in seconds."""
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="Seconds without heartbeat (default RUN_STALE_AFTER).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Reaps once and reports how many runs it closed."""
        stale_after = options["stale_after"] or settings.RUN_STALE_AFTER
        closed = async_to_sync(reap_stale_runs)(
            Broadcaster(), worker_id=f"reaper:{WORKER_ID}", stale_after=stale_after
        )
        self.stdout.write(f"closed {closed} stale run(s)")
