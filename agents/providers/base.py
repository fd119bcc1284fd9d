"""The agent protocol: what every agent gets to answer a run, and what it must provide."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.dispatcher import ToolDispatcher
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
    """An agent answers one user message through the emitter and the tool dispatcher.

    Continuation (docs/operations.md): when the worker running a run is gone, another
    worker calls `run` again with `run_input.journal` set. The agent carries on from it:
    it does not repeat answer text already streamed (the emitter's text so far is the
    journal's), and reuses the outcomes of tool calls already completed. An agent that
    cannot do that sets the class attribute `can_continue = False`; its runs then end
    with agent_error{code: worker_lost} instead. An agent without the attribute is taken
    to continue.
    """

    name: str

    async def run(
        self, run_input: RunInput, emitter: RunEmitter, dispatcher: ToolDispatcher
    ) -> None:
        """Thinks, calls tools and streams the answer; raises AgentFailure on failure."""


def can_continue(agent: Any) -> bool:
    """Whether an agent continues a run from its journal (`can_continue`, default True)."""
    return bool(getattr(agent, "can_continue", True))
