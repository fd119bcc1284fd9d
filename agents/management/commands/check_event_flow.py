"""`manage.py check_event_flow`: the /healthz/events check for cron and deploy scripts."""

import json
from typing import Any

from asgiref.sync import async_to_sync
from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.health import FlowResult, check_event_flow


class Command(BaseCommand):
    help = "Runs a synthetic agent run through the real pipeline; exits non-zero on failure."

    def add_arguments(self, parser: CommandParser) -> None:
        """Takes the time limit."""
        parser.add_argument("--timeout", type=float, default=5.0)

    def handle(self, *args: Any, **options: Any) -> None:
        """Runs the check and prints its JSON result."""
        service = getattr(apps.get_app_config("agents"), "service", None)
        if service is None:
            raise CommandError("the agent service is not configured")

        async def run() -> FlowResult:
            try:
                return await check_event_flow(service, timeout=options["timeout"])
            finally:
                await service.wait_idle(timeout=30)
                await service.stop_background()

        result = async_to_sync(run)()
        self.stdout.write(json.dumps(result.as_json(), indent=2))
        if not result.ok:
            raise CommandError(f"event flow broken: {result.detail}")
