"""The agent protocol: what every agent gets to answer a run, and what it must provide."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agents.dispatcher import RunTools
from agents.emitter import RunEmitter


@dataclass
class RunInput:
    """What an agent gets to answer: the user's text and its thread's earlier messages."""

    text: str
    history: list[dict[str, str]]


class Agent(Protocol):
    """An agent answers one user message through the emitter and the run's tools.

    A class, built once at start-up with no arguments (NETRA_AGENTS names it). `name` is
    the NETRA_AGENTS entry's name (the registry sets it on the instance), `description`
    says what it is for (GET /api/agents/), `tools` lists the tool names it may call
    (None: every registered tool). `run` streams with `emitter.thinking(text)` and
    `emitter.partial(delta)`, calls `await tools.call(name, args)` (an outcome with
    `status`, `result` and `error`; a failed tool never raises), and fails the run with
    AgentFailure. It never touches the event log or the channel layer.
    """

    name: str

    @property
    def description(self) -> str:
        """What the agent is for, shown to users choosing one (a class attribute)."""

    @property
    def tools(self) -> Sequence[str] | None:
        """The tool names it may call; None: every registered tool (a class attribute)."""

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """Thinks, calls tools and streams the answer; raises AgentFailure on failure."""
