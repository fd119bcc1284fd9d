"""The agents application: runs, the supervisor, tools; wires the broadcaster in."""

from typing import Any

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"
    service: Any = None

    def ready(self) -> None:
        """Builds the broadcaster over the channel layer and hands it to the agent service,
        with the agent AGENT_PROVIDER names; registers the provider's system check."""
        from django.core import checks

        from agents.checks import check_llm_provider
        from agents.dispatcher import ToolDispatcher
        from agents.providers import build_agent
        from agents.runtime import AgentService
        from agents.tools import default_registry
        from chat.broadcaster import Broadcaster

        self.service = AgentService(
            broadcaster=Broadcaster(),
            agent=build_agent(),
            dispatcher=ToolDispatcher(default_registry()),
        )
        checks.register(check_llm_provider)
