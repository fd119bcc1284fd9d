"""A plain-code agent for the tests: it computes the message with the calculator."""

from agents.dispatcher import RunTools
from agents.emitter import RunEmitter
from agents.providers.base import RunInput


class EchoAgent:
    """Computes the message with the calculator and says what came of it."""

    name = "echo"
    description = "Computes what you write with the calculator."
    tools = ("calculator",)

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """One calculator call, then the answer."""
        await emitter.thinking("I will compute it.")
        outcome = await tools.call("calculator", {"expression": run_input.text})
        if outcome.status == "ok":
            await emitter.partial(f"It is {outcome.result['value']}.")
        else:
            assert outcome.error is not None
            await emitter.partial(f"I could not: {outcome.error['code']}.")
