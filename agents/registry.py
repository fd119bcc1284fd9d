"""The agents a thread may choose, by name: the built-in `builtin` and `openai` and the
NETRA_AGENTS entries, each built once at start-up.

A problem found while loading (a path that does not import, a class that is not an agent,
a constructor that fails, a tool that does not exist, a default that names no agent) is
kept for the system check (agents/checks.py), which names it and stops the server: a
misconfigured agent is never replaced by another one.
"""

import importlib
import inspect
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from agents.providers.base import Agent
from agents.tools import ToolRegistry

logger = logging.getLogger("netra.agents")

BUILTIN_AGENTS = {
    "builtin": "agents.providers.builtin.BuiltinAgent",
    "openai": "agents.providers.openai_compat.OpenAICompatAgent",
}


@dataclass(frozen=True)
class AgentProblem:
    """A misconfigured agent entry, reported by the system check."""

    kind: str  # "import", "protocol", "build", "tools" or "default"
    culprit: str
    message: str


def import_class(path: str) -> Any:
    """Returns the object a dotted path `package.module.Name` names; raises ImportError."""
    module_path, _, attribute = path.rpartition(".")
    if not module_path:
        raise ImportError(f"{path!r} is not a dotted path of the form package.module.Class")
    module = importlib.import_module(module_path)
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise ImportError(f"module {module_path!r} has no attribute {attribute!r}") from exc


def protocol_gaps(cls: Any) -> list[str]:
    """Returns what keeps `cls` from being an agent class (empty when it is one)."""
    if not inspect.isclass(cls):
        return [f"it is a {type(cls).__name__}, not a class"]
    gaps = []
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str):
            gaps.append(f"it has no string attribute {attribute!r}")
    tools = getattr(cls, "tools", None)
    if tools is not None and (isinstance(tools, str) or not all(isinstance(t, str) for t in tools)):
        gaps.append("its 'tools' is not a list of tool names")
    run = getattr(cls, "run", None)
    if not inspect.iscoroutinefunction(run):
        gaps.append("it has no 'async def run(self, run_input, emitter, tools)'")
    else:
        try:
            inspect.signature(run).bind(None, None, None, None)
        except TypeError:
            gaps.append("its run() does not take (run_input, emitter, tools)")
    return gaps


@dataclass
class AgentRegistry:
    """The configured agents by name, the default one, and the problems found loading them."""

    agents: dict[str, Agent] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    default: str = "builtin"
    problems: list[AgentProblem] = field(default_factory=list)

    def load(
        self,
        entries: Mapping[str, str],
        *,
        default: str,
        tool_names: Collection[str],
        openai_configured: bool,
    ) -> None:
        """Builds the built-in agents and `entries` (which add to them or replace them).

        The built-in `openai` entry counts as configured only when `openai_configured`
        (a model is set), it is the default, or `entries` names it: an install without a
        model does not offer an agent that could only fail."""
        self.agents.clear()
        self.paths.clear()
        self.problems.clear()
        self.default = default
        wanted = dict(BUILTIN_AGENTS)
        if not (openai_configured or default == "openai" or "openai" in entries):
            del wanted["openai"]
        wanted.update(entries)
        for name, path in wanted.items():
            agent = self._build(name, path)
            if agent is not None:
                self.register(name, agent, path=path)
                self._check_tools(name, agent, tool_names)

    def _build(self, name: str, path: str) -> Agent | None:
        culprit = f"NETRA_AGENTS[{name!r}]"
        if not path:
            self.problems.append(
                AgentProblem("import", culprit, f"The agent {name!r} has no class path.")
            )
            return None
        try:
            cls = import_class(path)
        except Exception as exc:  # any import failure is a check error, not a crash
            logger.exception("agent %r: %r does not import", name, path, extra={"agent": name})
            self.problems.append(
                AgentProblem(
                    "import",
                    culprit,
                    f"The agent {name!r} names {path!r}, which does not import: "
                    f"{type(exc).__name__}: {exc}",
                )
            )
            return None
        gaps = protocol_gaps(cls)
        if gaps:
            self.problems.append(
                AgentProblem(
                    "protocol", culprit, f"{path} is not an agent class: {'; '.join(gaps)}."
                )
            )
            return None
        try:
            agent = cls()
        except Exception as exc:  # a constructor that fails is a check error, not a crash
            logger.exception("agent %r: %s() failed", name, path, extra={"agent": name})
            self.problems.append(
                AgentProblem(
                    "build",
                    culprit,
                    f"The agent {name!r} ({path}) could not be built with no arguments: "
                    f"{type(exc).__name__}: {exc}",
                )
            )
            return None
        return cast(Agent, agent)

    def _check_tools(self, name: str, agent: Agent, tool_names: Collection[str]) -> None:
        missing = [t for t in (agent.tools or ()) if t not in tool_names]
        if missing:
            self.problems.append(
                AgentProblem(
                    "tools",
                    f"NETRA_AGENTS[{name!r}]",
                    f"The agent {name!r} may call {', '.join(map(repr, missing))}, which no "
                    "registered tool is named.",
                )
            )

    def register(self, name: str, agent: Agent, *, path: str = "") -> None:
        """Adds (or replaces) the agent of that name; its `name` becomes the entry's."""
        agent.name = name
        self.agents[name] = agent
        self.paths[name] = path or f"{type(agent).__module__}.{type(agent).__qualname__}"

    def get(self, name: str) -> Agent | None:
        """Returns the agent of that name, or None if none is configured."""
        return self.agents.get(name)

    @property
    def names(self) -> list[str]:
        """The configured agents' names, built-in ones first."""
        return list(self.agents)

    def describe(self, tools: ToolRegistry) -> list[dict[str, Any]]:
        """Returns each agent with the tools it may call (GET /api/agents/)."""
        catalogue = []
        for name, agent in self.agents.items():
            allowed = None if agent.tools is None else set(agent.tools)
            catalogue.append(
                {
                    "name": name,
                    "description": agent.description,
                    "tools": [
                        {
                            "name": tool.name,
                            "description": tool.description,
                            "parameters": tool.parameters,
                        }
                        for tool in tools.tools.values()
                        if allowed is None or tool.name in allowed
                    ],
                }
            )
        return catalogue

    def default_problem(self) -> AgentProblem | None:
        """Returns the problem of a default agent that names no configured agent."""
        if self.default in self.agents:
            return None
        return AgentProblem(
            "default",
            "NETRA_DEFAULT_AGENT",
            f"NETRA_DEFAULT_AGENT is {self.default!r}; no agent of that name is configured "
            f"(configured: {', '.join(self.names) or 'none'}).",
        )


AGENTS = AgentRegistry()
