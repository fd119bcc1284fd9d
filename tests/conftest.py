"""Shared fixtures: users, threads, tokens, the agent service, real servers, Sentry events.

The one way to start a real server is the `servers` factory (`server` is the one a module's
tests share); the one way to read a metric is `helpers.metric`; the one client of a real
server's socket is tests/sockets.py; in process, tests/helpers.py drives the ASGI app.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sentry_sdk
from channels.db import database_sync_to_async
from django.apps import apps
from sentry_sdk.transport import Transport

from netra_site.sentry import init_sentry
from tests import helpers
from tests.servers import Server, Servers

# The testing kit teams use (agents.testing): our suite runs on it too.
pytest_plugins = ["agents.testing"]


@pytest.fixture
async def service() -> AsyncIterator[Any]:
    """The real agent service; waits for its runs and stops its background loop after."""
    svc = getattr(apps.get_app_config("agents"), "service")  # noqa: B009 - set in ready()
    yield svc
    try:
        await svc.wait_idle(timeout=20)
    finally:
        await svc.stop_background()


@pytest.fixture
def registry() -> Iterator[Any]:
    """The process's tool registry, restored after the test (`@tool` registers there)."""
    from agents.tools import REGISTRY

    saved, problems = dict(REGISTRY.tools), list(REGISTRY.problems)
    yield REGISTRY
    REGISTRY.tools.clear()
    REGISTRY.tools.update(saved)
    REGISTRY.problems[:] = problems


@pytest.fixture
def agents() -> Iterator[Any]:
    """The process's agent registry (NETRA_AGENTS), restored after the test."""
    from agents.registry import AGENTS

    saved, paths, problems, default = (
        dict(AGENTS.agents),
        dict(AGENTS.paths),
        list(AGENTS.problems),
        AGENTS.default,
    )
    yield AGENTS
    AGENTS.agents.clear()
    AGENTS.agents.update(saved)
    AGENTS.paths.clear()
    AGENTS.paths.update(paths)
    AGENTS.problems[:] = problems
    AGENTS.default = default


@pytest.fixture
async def user() -> Any:
    """A user with a thread-ready account."""
    return await database_sync_to_async(helpers.make_user)("alice")


@pytest.fixture
async def other_user() -> Any:
    """A second user, whose data `user` must never reach."""
    return await database_sync_to_async(helpers.make_user)("mallory")


@pytest.fixture
async def thread(user: Any, request: pytest.FixtureRequest) -> Any:
    """A thread of `user`, answered by the module's THREAD_AGENT (default: the default
    agent)."""
    agent = getattr(request.module, "THREAD_AGENT", None)
    return await database_sync_to_async(helpers.make_thread)(user, agent=agent)


@pytest.fixture
async def token(user: Any) -> str:
    """A raw API token of `user`."""
    return await database_sync_to_async(helpers.make_token)(user)


@pytest.fixture
def slow_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket write takes 20 ms (see helpers.make_sockets_slow)."""
    helpers.make_sockets_slow(monkeypatch)


# --- real servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """The server factory: `servers.start(env=..., ...)` starts a daphne process on its own
    port and database (tests/servers.py), `servers.make(...)` one to start later. Each is
    stopped when the module's tests are done; a test may stop one earlier."""
    factory = Servers()
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def server(servers: Servers, request: pytest.FixtureRequest) -> Server:
    """The daphne server a module's tests share, started with the module's SERVER_ENV."""
    return servers.start(env=dict(getattr(request.module, "SERVER_ENV", {})))


# --- Sentry ---------------------------------------------------------------------------------


class CapturingTransport(Transport):
    """A real sentry-sdk transport that keeps the events instead of sending them."""

    events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        for item in envelope.items:
            if item.type == "event":
                CapturingTransport.events.append(item.payload.json)


@pytest.fixture
def sentry_events() -> Iterator[list[dict[str, Any]]]:
    """The events Sentry would have received during the test, as sent (after before_send):
    sentry-sdk runs as in production (netra_site.sentry) with a transport that keeps them."""
    CapturingTransport.events = []
    init_sentry(
        dsn="https://public@127.0.0.1/1", send_message_text=False, transport=CapturingTransport
    )
    yield CapturingTransport.events
    sentry_sdk.init(dsn=None)
