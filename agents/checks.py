"""Start-up checks of the LLM provider and the tools: a misconfigured model or tool is an
error that stops the server, not a surprise at the first run."""

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


TOOL_CHECK_IDS = {"import": "netra.E120", "duplicate": "netra.E121", "schema": "netra.E122"}
TOOL_HINTS = {
    "import": "NETRA_TOOLS lists dotted paths of modules that import; see docs/extending.md.",
    "duplicate": "Give one of them another name: @tool(name=...).",
    "schema": "Annotate every parameter with a type pydantic can describe as JSON schema.",
}


def check_tools(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Checks NETRA_TOOLS: each module imported, no two tools of one name, and every tool's
    signature described as JSON schema; each problem names its culprit."""
    from agents.tools import REGISTRY

    if not isinstance(settings.NETRA_TOOLS, list | tuple):
        return [
            Error(
                f"NETRA_TOOLS is {settings.NETRA_TOOLS!r}; it must be a list of module paths.",
                hint=TOOL_HINTS["import"],
                id=TOOL_CHECK_IDS["import"],
            )
        ]
    return [
        Error(
            problem.message,
            hint=TOOL_HINTS[problem.kind],
            obj=problem.culprit,
            id=TOOL_CHECK_IDS[problem.kind],
        )
        for problem in REGISTRY.problems
    ]
