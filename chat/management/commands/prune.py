"""`manage.py prune`: deletes the events of old finished runs and old closed connections."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from chat.pruning import prune_plan, run_prune


class Command(BaseCommand):
    help = (
        "Prunes the events of finished runs older than EVENT_RETENTION_DAYS (whole runs; "
        "never a thread's newest run) and closed connections older than "
        "CONNECTION_LOG_RETENTION_DAYS with their state log. Messages stay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Takes --dry-run and an optional batch size."""
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print per kind what would be deleted; delete nothing.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Rows per transaction (default PRUNE_BATCH_SIZE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Prints the plan (dry run) or prunes and prints what was deleted."""
        self.stdout.write(
            f"retention: events {settings.EVENT_RETENTION_DAYS:g} days, "
            f"connections {settings.CONNECTION_LOG_RETENTION_DAYS:g} days (0 keeps all)"
        )
        if options["dry_run"]:
            self.stdout.write("dry run, nothing is deleted; would delete:")
            for line in prune_plan().lines():
                self.stdout.write(f"  {line}")
            return
        report = run_prune(batch_size=options["batch_size"])
        self.stdout.write(
            f"deleted: events: {report.events} (of {report.runs} runs), "
            f"connections: {report.connections} (with {report.state_log} state log rows), "
            f"in {len(report.batches)} batches, longest {report.longest_batch_ms:.1f} ms"
        )
