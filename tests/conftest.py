"""Shared fixtures: users, threads, tokens, sockets, and the service/skip policy."""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.apps import apps

from tests import helpers


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
async def user() -> Any:
    """A user with a thread-ready account."""
    return await database_sync_to_async(helpers.make_user)("alice")


@pytest.fixture
async def other_user() -> Any:
    """A second user, whose data `user` must never reach."""
    return await database_sync_to_async(helpers.make_user)("mallory")


@pytest.fixture
async def thread(user: Any) -> Any:
    """A thread of `user`."""
    return await database_sync_to_async(helpers.make_thread)(user)


@pytest.fixture
async def token(user: Any) -> str:
    """A raw API token of `user`."""
    return await database_sync_to_async(helpers.make_token)(user)


@pytest.fixture
def slow_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket write takes 20 ms (see helpers.make_sockets_slow)."""
    helpers.make_sockets_slow(monkeypatch)
