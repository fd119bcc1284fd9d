"""Threads choose their agent: the registry, the thread API, GET /api/agents/, the thread
list page's picker, and a thread whose agent was removed (agent_unavailable)."""

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, Client

from agents.registry import AgentRegistry, protocol_gaps
from agents.testing import assert_run_invariants
from chat.models import Thread
from tests import helpers
from tests.agentmods.good import EchoAgent

pytestmark = [pytest.mark.django_db(transaction=True)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_thread(token: str, body: dict[str, Any]) -> Any:
    return await AsyncClient().post(
        "/api/threads/",
        data=json.dumps(body),
        content_type="application/json",
        headers=bearer(token),
    )


@pytest.fixture
def echo(agents: Any) -> EchoAgent:
    """The EchoAgent configured as `echo` for the test."""
    agent = EchoAgent()
    agents.register("echo", agent, path="tests.agentmods.good.EchoAgent")
    return agent


async def test_a_thread_is_created_with_the_agent_it_names(token: str, echo: EchoAgent) -> None:
    created = await create_thread(token, {"title": "sums", "agent": "echo"})
    assert created.status_code == 201
    assert created.json()["agent"] == "echo"
    thread = await database_sync_to_async(Thread.objects.get)(pk=created.json()["id"])
    assert thread.agent == "echo"
    listed = await AsyncClient().get("/api/threads/", headers=bearer(token))
    assert [t["agent"] for t in listed.json()["threads"]] == ["echo"]


async def test_a_thread_without_an_agent_gets_the_default(token: str, settings: Any) -> None:
    created = await create_thread(token, {"title": "plain"})
    assert created.status_code == 201
    assert created.json()["agent"] == settings.NETRA_DEFAULT_AGENT == "builtin"


async def test_an_unknown_agent_is_400_unknown_agent(token: str, echo: EchoAgent) -> None:
    created = await create_thread(token, {"agent": "nobody"})
    assert created.status_code == 400
    error = created.json()["error"]
    assert error["code"] == "unknown_agent"
    assert "'nobody'" in error["message"] and "builtin, echo" in error["message"]
    assert await database_sync_to_async(Thread.objects.count)() == 0


async def test_the_agent_must_be_a_string(token: str) -> None:
    created = await create_thread(token, {"agent": 7})
    assert created.status_code == 400
    assert created.json()["error"]["code"] == "bad_request"


async def test_get_agents_lists_each_agent_with_its_tools(token: str, echo: EchoAgent) -> None:
    response = await AsyncClient().get("/api/agents/", headers=bearer(token))
    assert response.status_code == 200
    agents = {agent["name"]: agent for agent in response.json()["agents"]}
    assert list(agents) == ["builtin", "echo"]
    assert agents["echo"]["description"] == EchoAgent.description
    (calculator,) = agents["echo"]["tools"]
    assert set(calculator) == {"name", "description", "parameters"}
    assert calculator["name"] == "calculator"
    assert calculator["parameters"]["properties"]["expression"]["type"] == "string"
    assert [t["name"] for t in agents["builtin"]["tools"]] == [
        "calculator",
        "clock",
        "wait",
        "send_note",
    ]


async def test_get_agents_needs_credentials() -> None:
    response = await AsyncClient().get("/api/agents/")
    assert response.status_code == 401


async def test_the_threads_agent_answers_and_agent_started_names_it(
    user: Any, token: str, echo: EchoAgent
) -> None:
    thread = await database_sync_to_async(helpers.make_thread)(user, agent="echo")
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("6*7"))
    frames = await helpers.receive_until(comm, helpers.completed, timeout=20)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert_run_invariants(events)
    assert events[0]["data"]["agent"] == "echo"
    assert events[-1]["data"]["text"] == "It is 42."


async def test_a_thread_whose_agent_was_removed_answers_agent_unavailable(
    user: Any, token: str, service: Any, sentry_events: list[dict[str, Any]]
) -> None:
    thread = await database_sync_to_async(helpers.make_thread)(user, agent="retired")
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("hello?"))
    frames = await helpers.receive_until(comm, helpers.completed, timeout=20)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert_run_invariants(events)
    assert [e["type"] for e in events] == ["agent_started", "agent_error", "agent_completed"]
    assert events[0]["data"]["agent"] == "retired"
    error = events[1]["data"]
    assert (error["code"], error["retryable"]) == ("agent_unavailable", False)
    assert "'retired'" in error["message"]
    assert events[-1]["data"]["status"] == "failed"
    assert sentry_events == [], "a configuration change, not a crash"


def test_the_thread_list_offers_the_agents_when_more_than_one(user: Any, agents: Any) -> None:
    client = Client()
    client.force_login(user)
    page = client.get("/threads/").content.decode()
    assert 'name="agent"' not in page, "one agent: no picker"

    agents.register("echo", EchoAgent())
    page = client.get("/threads/").content.decode()
    assert '<select id="new-agent" name="agent"' in page
    assert '<option value="builtin" selected>builtin</option>' in page
    assert '<option value="echo">echo</option>' in page

    response = client.post("/threads/", {"title": "sums", "agent": "echo"})
    assert response.status_code == 302
    assert Thread.objects.get(title="sums").agent == "echo"
    refused = client.post("/threads/", {"title": "x", "agent": "nobody"})
    assert refused.status_code == 400
    assert "no agent named" in refused.content.decode()
    assert not Thread.objects.filter(title="x").exists()


# --- the registry ----------------------------------------------------------------------------


def test_entries_add_to_the_built_in_agents_or_replace_them() -> None:
    registry = AgentRegistry()
    registry.load(
        {"echo": "tests.agentmods.good.EchoAgent"},
        default="builtin",
        tool_names={"calculator", "clock", "wait", "send_note"},
        openai_configured=False,
    )
    assert registry.names == ["builtin", "echo"], "openai without a model is not offered"
    assert registry.problems == []
    assert registry.get("echo") is not None and registry.get("echo").name == "echo"  # type: ignore[union-attr]

    registry.load(
        {"builtin": "tests.agentmods.good.EchoAgent"},
        default="builtin",
        tool_names={"calculator", "clock", "wait", "send_note"},
        openai_configured=True,
    )
    assert registry.names == ["builtin", "openai"]
    assert isinstance(registry.get("builtin"), EchoAgent)
    assert registry.get("builtin").name == "builtin"  # type: ignore[union-attr]


def test_the_default_must_be_configured() -> None:
    registry = AgentRegistry()
    registry.load({}, default="support", tool_names=set(), openai_configured=False)
    problem = registry.default_problem()
    assert problem is not None and problem.culprit == "NETRA_DEFAULT_AGENT"
    assert "'support'" in problem.message


@pytest.mark.parametrize(
    ("name", "gap"),
    [
        ("NoRun", "no 'async def run"),
        ("SyncRun", "no 'async def run"),
        ("not_a_class", "not a class"),
    ],
)
def test_protocol_gaps_name_what_is_missing(name: str, gap: str) -> None:
    from tests.agentmods import broken

    assert any(gap in g for g in protocol_gaps(getattr(broken, name)))


def test_a_good_agent_class_has_no_gaps() -> None:
    assert protocol_gaps(EchoAgent) == []


def test_threads_existing_before_the_migration_get_the_default_agent(
    user: Any, settings: Any
) -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("chat", "0003_prune_record")], [("chat", "0004_thread_agent")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old_thread = executor.loader.project_state(before).apps.get_model("chat", "Thread")
    old_id = old_thread.objects.create(owner_id=user.pk, title="from before").pk
    settings.NETRA_DEFAULT_AGENT = "echo"
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert Thread.objects.get(pk=old_id).agent == "echo"
