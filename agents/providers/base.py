"""The agent protocol: what every agent gets to answer a run, and what it must provide."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.dispatcher import RunTools
from agents.emitter import RunEmitter


@dataclass
class RunInput:
    """What an agent gets to answer: the user's text, its thread's earlier messages and,
    on a continued run, the run's `journal`: the events it already logged (as clients see
    them: dicts with `type`, `seq`, `data`), from agent_started to the agent_thinking
    {resumed: true} that marks where it goes on. Empty on a run's first attempt."""

    text: str
    history: list[dict[str, str]]
    journal: list[dict[str, Any]] = field(default_factory=list)


class Agent(Protocol):
    """An agent answers one user message through the emitter and the run's tools.

    A class, built once at start-up with no arguments (NETRA_AGENTS names it). `name` is
    the NETRA_AGENTS entry's name (the registry sets it on the instance), `description`
    says what it is for (GET /api/agents/), `tools` lists the tool names it may call
    (None: every registered tool). `run` streams with `emitter.thinking(text)` and
    `emitter.partial(delta)`, calls `await tools.call(name, args)` (an outcome with
    `status`, `result` and `error`; a failed tool never raises), and fails the run with
    AgentFailure. It never touches the event log or the channel layer.

    Continuation (docs/operations.md): when the worker running a run is gone, another
    worker calls `run` again with `run_input.journal` set. The agent carries on from it:
    it does not repeat answer text already streamed (the emitter's text so far is the
    journal's), and reuses the outcomes of tool calls already completed. An agent that
    cannot do that sets the class attribute `can_continue = False`; its runs then end
    with agent_error{code: worker_lost} instead. An agent without the attribute is taken
    to continue.
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


def can_continue(agent: Any) -> bool:
    """Whether an agent continues a run from its journal (`can_continue`, default True)."""
    return bool(getattr(agent, "can_continue", True))
