"""The agents application: runs, the supervisor, tools; wires the broadcaster in."""

from typing import Any

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"
    service: Any = None

    def ready(self) -> None:
        """Imports the NETRA_TOOLS modules (their tools register themselves; a module that
        fails to import is left to the tools check), builds every agent of NETRA_AGENTS once
        (a problem is left to the agents check), builds the broadcaster over the channel
        layer and hands both to the agent service; registers the system checks."""
        from django.conf import settings
        from django.core import checks

        from agents.checks import check_agents, check_llm_provider, check_tools
        from agents.dispatcher import ToolDispatcher
        from agents.registry import AGENTS
        from agents.runtime import AgentService
        from agents.tools import REGISTRY
        from chat.broadcaster import Broadcaster

        if isinstance(settings.NETRA_TOOLS, list | tuple):
            REGISTRY.import_modules(settings.NETRA_TOOLS)
        AGENTS.load(
            settings.NETRA_AGENTS if isinstance(settings.NETRA_AGENTS, dict) else {},
            default=settings.NETRA_DEFAULT_AGENT,
            tool_names=REGISTRY.tools,
            openai_configured=bool(settings.AGENT_MODEL.strip()),
        )
        self.service = AgentService(
            broadcaster=Broadcaster(),
            agents=AGENTS,
            dispatcher=ToolDispatcher(REGISTRY),
        )
        checks.register(check_llm_provider)
        checks.register(check_tools)
        checks.register(check_agents)
