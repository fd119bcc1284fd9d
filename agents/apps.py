"""The agents application: runs, the supervisor, tools; wires the broadcaster in."""

from typing import Any

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"
    service: Any = None

    def ready(self) -> None:
        """Imports the NETRA_TOOLS modules (their tools register themselves; a module that
        fails to import is left to the tools check), builds the broadcaster over the channel
        layer and hands it to the agent service, with the agent AGENT_PROVIDER names;
        registers the provider's and the tools' system checks."""
        from django.conf import settings
        from django.core import checks

        from agents.checks import check_llm_provider, check_tools
        from agents.dispatcher import ToolDispatcher
        from agents.providers import build_agent
        from agents.runtime import AgentService
        from agents.tools import REGISTRY
        from chat.broadcaster import Broadcaster

        if isinstance(settings.NETRA_TOOLS, list | tuple):
            REGISTRY.import_modules(settings.NETRA_TOOLS)
        self.service = AgentService(
            broadcaster=Broadcaster(),
            agent=build_agent(),
            dispatcher=ToolDispatcher(REGISTRY),
        )
        checks.register(check_llm_provider)
        checks.register(check_tools)
