"""Agent providers: the agent protocol (base.py) and the built-in agents, one module each.

Which agents a thread may choose is NETRA_AGENTS (agents/registry.py); an AGENT_PROVIDER or
NETRA_DEFAULT_AGENT that names no configured agent is a system check error, never a
fallback to another agent."""

from agents.providers.base import Agent, RunInput

__all__ = ["Agent", "RunInput"]
