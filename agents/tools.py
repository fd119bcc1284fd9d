"""Tools the agent can call: `@tool`, its context, the registry, and the built-in tools.

Teams write `from agents.tools import tool, ToolContext`; the definitions live in
agents/tooldef.py and the built-in tools in agents/builtin_tools.py."""

from agents.builtin_tools import CALCULATOR, CLOCK, MAX_WAIT, SEND_NOTE, WAIT, calculate
from agents.tooldef import (
    DEFAULT_TIMEOUT,
    REGISTRY,
    Tool,
    ToolContext,
    ToolFunc,
    ToolProblem,
    ToolRegistry,
    build_tool,
    tool,
)

__all__ = [
    "CALCULATOR",
    "CLOCK",
    "DEFAULT_TIMEOUT",
    "MAX_WAIT",
    "REGISTRY",
    "SEND_NOTE",
    "WAIT",
    "Tool",
    "ToolContext",
    "ToolFunc",
    "ToolProblem",
    "ToolRegistry",
    "build_tool",
    "calculate",
    "default_registry",
    "tool",
]


def default_registry() -> ToolRegistry:
    """Returns a new registry with the built-in tools only."""
    registry = ToolRegistry()
    for builtin in (CALCULATOR, CLOCK, WAIT, SEND_NOTE):
        registry.register(builtin)
    return registry
