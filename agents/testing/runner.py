"""Running an agent in a test through the real runtime, and checking the run's events.

`run_agent` submits one message on a thread whose agent is the one under test; the run
goes through the real agent service, emitter, tool dispatcher and event log, and what it
returns is what a client reads from the log. The test needs the database
(`@pytest.mark.django_db(transaction=True)`: the run writes from worker threads).
"""

import uuid
from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.contrib.auth import get_user_model

from agents.invariants import by_run, run_violations
from agents.providers.base import Agent
from agents.registry import AGENTS
from chat.events import events_after
from chat.models import Thread

_MISSING: Any = object()


def swap_agent(name: str, agent: Agent) -> Any:
    """Makes `agent` the NETRA_AGENTS agent `name`; returns what was there, for
    `restore_agent` (the agent's own `name` is left as it is)."""
    previous = AGENTS.agents.get(name, _MISSING)
    AGENTS.agents[name] = agent
    return previous


def restore_agent(name: str, previous: Any) -> None:
    """Puts back what `swap_agent` replaced."""
    if previous is _MISSING:
        AGENTS.agents.pop(name, None)
    else:
        AGENTS.agents[name] = previous


def _service() -> Any:
    service = getattr(apps.get_app_config("agents"), "service", None)
    if service is None:
        raise RuntimeError("the agent service is not running (is 'agents' in INSTALLED_APPS?)")
    return service


def _thread_for(user: Any, thread: Thread | None, agent_name: str) -> tuple[Any, Thread]:
    if user is None:
        user = get_user_model().objects.create_user(
            username=f"agent-test-{uuid.uuid4().hex[:12]}", password=uuid.uuid4().hex
        )
    if thread is None:
        thread = Thread.objects.create(owner=user, title="run_agent", agent=agent_name)
    elif thread.agent != agent_name:
        Thread.objects.filter(pk=thread.pk).update(agent=agent_name)
        thread.agent = agent_name
    return user, thread


async def run_agent(
    agent: Agent | str,
    text: str,
    *,
    user: Any = None,
    thread: Thread | None = None,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Runs `agent` (an instance, or a NETRA_AGENTS name) on one user message and returns
    the run's events as clients see them (the logged frames, in seq order).

    Without `user` a new user is made; without `thread` a new thread of the user's, whose
    agent is the one under test (a given thread is switched to it). An instance is
    reachable under its `name` for the duration of the run only."""
    if isinstance(agent, str):
        if AGENTS.get(agent) is None:
            raise LookupError(f"no agent named {agent!r} is configured ({AGENTS.names})")
        name, previous = agent, None
    else:
        name = getattr(agent, "name", "") or type(agent).__name__
        previous = swap_agent(name, agent)
    service = _service()
    try:
        user, thread = await sync_to_async(_thread_for)(user, thread, name)
        result = await service.submit(
            thread_id=thread.id, user=user, text=text, client_msg_id=uuid.uuid4().hex
        )
        await service.wait_idle(timeout=timeout)
    finally:
        if previous is not None:
            restore_agent(name, previous)
        if not service.runs:
            await service.stop_background()
    events = await sync_to_async(events_after)(thread_id=thread.id, after_seq=0)
    return [event for event in events if event["run_id"] == str(result.run_id)]


def run_invariant_violations(events: Iterable[dict[str, Any]]) -> list[str]:
    """Returns every broken run invariant of these events (of one run or several), each
    named with its run; empty when every run is whole."""
    problems = []
    for run_id, run in by_run(events).items():
        seqs = [event["seq"] for event in run]
        if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            problems.append(f"run {run_id}: its seqs have a gap: {seqs}")
        problems += [f"run {run_id}: {problem}" for problem in run_violations(run)]
    return problems


def assert_run_invariants(events: Iterable[dict[str, Any]]) -> None:
    """Raises AssertionError naming each broken invariant of the runs these events are of
    (agent_started first and agent_completed last, once each; seqs increasing without gap;
    every tool call and approval paired; thinking before tools and text; the answer equal
    to the partial texts; agent_error only just before agent_completed{failed})."""
    events = list(events)
    if not events:
        raise AssertionError("broken run invariants:\n- there are no events")
    problems = run_invariant_violations(events)
    if problems:
        raise AssertionError("broken run invariants:\n" + "\n".join(f"- {p}" for p in problems))
