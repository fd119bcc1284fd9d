"""The pytest side of the kit: the `scripted_llm` fixture (loaded by
`pytest_plugins = ["agents.testing"]`)."""

from collections.abc import AsyncIterator

import pytest_asyncio
from django.apps import apps

from agents.testing.scripted import ScriptedLLM


@pytest_asyncio.fixture
async def scripted_llm() -> AsyncIterator[ScriptedLLM]:
    """A scripted chat-completions server on loopback, with the `openai` agent pointed at
    it for the test (`scripted_llm.point("support")` points another one); the runs still
    going are awaited before the server stops and the agents are put back."""
    server = await ScriptedLLM().start()
    server.point("openai")
    try:
        yield server
    finally:
        service = getattr(apps.get_app_config("agents"), "service", None)
        try:
            if service is not None:
                await service.wait_idle(timeout=20)
        finally:
            await server.stop()
