"""Agent providers: which agent answers the runs, chosen by AGENT_PROVIDER."""

import logging

from django.conf import settings

from agents.providers.base import Agent
from agents.providers.builtin import BuiltinAgent

logger = logging.getLogger("netra.llm")

PROVIDERS = ("builtin", "openai")


def build_agent() -> Agent:
    """Returns the agent AGENT_PROVIDER names (the system check reports a bad value)."""
    provider = settings.AGENT_PROVIDER
    if provider == "openai":
        from agents.providers.openai_compat import OpenAICompatAgent, ProviderConfig

        return OpenAICompatAgent(ProviderConfig.from_settings())
    if provider != "builtin":
        logger.error("AGENT_PROVIDER=%r is not one of %s; using builtin", provider, PROVIDERS)
    return BuiltinAgent()
