"""Start-up checks of the LLM provider and the tools: a misconfigured model or tool is an
error that stops the server, not a surprise at the first run."""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error


def check_llm_provider(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Checks AGENT_PROVIDER (a built-in agent or a NETRA_AGENTS name) and, for openai,
    the model, the base URL and the bounds."""
    from agents.registry import BUILTIN_AGENTS

    provider = settings.AGENT_PROVIDER
    entries = settings.NETRA_AGENTS if isinstance(settings.NETRA_AGENTS, dict) else {}
    known = list(dict.fromkeys([*BUILTIN_AGENTS, *entries]))
    if provider not in known:
        return [
            Error(
                f"AGENT_PROVIDER is {provider!r}; it must be one of {', '.join(known)}.",
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


AGENT_CHECK_IDS = {
    "import": "netra.E130",
    "protocol": "netra.E131",
    "build": "netra.E132",
    "tools": "netra.E133",
    "default": "netra.E134",
    "setting": "netra.E135",
}
AGENT_HINTS = {
    "import": "NETRA_AGENTS maps names to dotted class paths (name=package.module.Class).",
    "protocol": "An agent class has name, description, optional tools and "
    "async def run(self, run_input, emitter, tools); see docs/extending.md.",
    "build": "Agents are built once at start-up with no arguments.",
    "tools": "List tools that NETRA_TOOLS registers (or the built-in ones) in its tools.",
    "default": "Set NETRA_DEFAULT_AGENT (or AGENT_PROVIDER) to a NETRA_AGENTS name.",
    "setting": "NETRA_AGENTS maps names to dotted class paths (name=package.module.Class).",
}


def check_agents(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Checks NETRA_AGENTS and NETRA_DEFAULT_AGENT: every entry imports, is an agent class,
    builds, names registered tools; the default is configured; the model settings of each
    OpenAI-compatible agent (check_llm_provider covers `openai` under AGENT_PROVIDER)."""
    from agents.providers.openai_compat import OpenAICompatAgent
    from agents.registry import AGENTS, AgentProblem

    if not isinstance(settings.NETRA_AGENTS, dict):
        return [
            Error(
                f"NETRA_AGENTS is {settings.NETRA_AGENTS!r}; it must map names to class paths.",
                hint=AGENT_HINTS["setting"],
                id=AGENT_CHECK_IDS["setting"],
            )
        ]
    problems: list[AgentProblem] = list(AGENTS.problems)
    default = AGENTS.default_problem()
    # An unknown AGENT_PROVIDER that is also the default is reported once, as E101.
    if default is not None and AGENTS.default != settings.AGENT_PROVIDER:
        problems.append(default)
    messages: list[CheckMessage] = [
        Error(
            problem.message,
            hint=AGENT_HINTS[problem.kind],
            obj=problem.culprit,
            id=AGENT_CHECK_IDS[problem.kind],
        )
        for problem in problems
    ]
    for name, agent in AGENTS.agents.items():
        if not isinstance(agent, OpenAICompatAgent):
            continue
        if name == "openai" and settings.AGENT_PROVIDER == "openai":
            continue
        messages += [
            Error(problem.message, hint=problem.hint, obj=f"NETRA_AGENTS[{name!r}]", id=problem.id)
            for problem in agent.config.problems()
        ]
    return messages
