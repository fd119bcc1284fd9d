"""The agent protocol: what every agent gets to answer a run, and what it must provide."""

from dataclasses import dataclass
from typing import Protocol

from agents.dispatcher import ToolDispatcher
from agents.emitter import RunEmitter


@dataclass
class RunInput:
    """What an agent gets to answer: the user's text and its thread's earlier messages."""

    text: str
    history: list[dict[str, str]]


class Agent(Protocol):
    """An agent answers one user message through the emitter and the tool dispatcher."""

    name: str

    async def run(
        self, run_input: RunInput, emitter: RunEmitter, dispatcher: ToolDispatcher
    ) -> None:
        """Thinks, calls tools and streams the answer; raises AgentFailure on failure."""
