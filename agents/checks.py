"""Start-up checks of the LLM provider: a misconfigured model is an error, not a surprise
at the first run."""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error


def check_llm_provider(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Checks AGENT_PROVIDER and, for openai, the model, the base URL and the bounds."""
    from agents.providers import PROVIDERS

    provider = settings.AGENT_PROVIDER
    if provider not in PROVIDERS:
        return [
            Error(
                f"AGENT_PROVIDER is {provider!r}; it must be one of {', '.join(PROVIDERS)}.",
                hint="Leave it unset for the built-in agent; see docs/providers.md.",
                id="netra.E101",
            )
        ]
    if provider != "openai":
        return []
    from agents.providers.openai_compat import ProviderConfig

    return [
        Error(problem.message, hint=problem.hint, id=problem.id)
        for problem in ProviderConfig.from_settings().problems()
    ]
