"""Misconfigured agents for the system check tests (each names its own problem)."""

from agents.dispatcher import RunTools
from agents.emitter import RunEmitter
from agents.providers.base import RunInput


class NoRun:
    """Has a name and a description but no run()."""

    name = "norun"
    description = "Cannot answer."


class SyncRun:
    """Its run is not async."""

    name = "syncrun"
    description = "Answers synchronously."

    def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """Not a coroutine."""


class NeedsArguments:
    """Its constructor needs an argument."""

    name = "needsargs"
    description = "Cannot be built."

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """Never called."""


class UnknownTool:
    """May call a tool nobody registered."""

    name = "unknowntool"
    description = "Calls a missing tool."
    tools = ("calculator", "teleport")

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """Never called."""


not_a_class = "an agent"
