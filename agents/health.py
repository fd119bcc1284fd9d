"""The event-flow check: a synthetic run through the real agent service, broadcaster and
channel layer to a probe channel, verified event by event (docs/operations.md)."""

import asyncio
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from chat import metrics
from chat.broadcaster import thread_group
from chat.layers import Inbox, events_layer
from chat.models import Thread
from chat.ports import AgentServicePort
from chat.runevents import EventType

logger = logging.getLogger("netra.health")

# The events the probe run must deliver, in this order (others may come in between).
EXPECTED = (
    EventType.AGENT_STARTED,
    EventType.AGENT_THINKING,
    EventType.TOOL_EXECUTING,
    EventType.TOOL_COMPLETED,
    EventType.PARTIAL_RESULT,
    EventType.AGENT_COMPLETED,
)
PROBE_USER = "netra:probe"  # a name sign-up cannot take (":" is not allowed in usernames)
PROBE_TEXT = "what is 6*7"
KEEP_PROBE_THREADS = 5
_lock: asyncio.Lock | None = None


@dataclass
class FlowResult:
    """The outcome of one event-flow check."""

    ok: bool
    missing: str | None = None
    detail: str = ""
    run_id: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The JSON body of /healthz/events."""
        body: dict[str, Any] = {
            "status": "ok" if self.ok else "fail",
            "run_id": self.run_id,
            "timings_ms": self.timings_ms,
            "seen": self.seen,
        }
        if not self.ok:
            body["missing"] = self.missing
            body["detail"] = self.detail
        return body


def _probe_thread() -> tuple[Any, Thread]:
    user, _ = get_user_model()._default_manager.get_or_create(
        username=PROBE_USER, defaults={"is_active": False}
    )
    thread = Thread.objects.create(owner=user, title="event-flow probe", is_probe=True)
    return user, thread


def _prune_probe_threads() -> None:
    old = Thread.objects.filter(is_probe=True).order_by("-created_at")[KEEP_PROBE_THREADS:]
    Thread.objects.filter(pk__in=list(old.values_list("pk", flat=True))).delete()


def first_missing(seen: list[str]) -> str | None:
    """Returns the first expected event not found, in order, among those seen."""
    position = 0
    for expected in EXPECTED:
        try:
            position = seen.index(expected, position) + 1
        except ValueError:
            return expected
    return None


async def check_event_flow(service: AgentServicePort, *, timeout: float = 5.0) -> FlowResult:
    """Runs the built-in agent on a probe thread and checks its events reach a channel."""
    global _lock
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        try:
            return await _check(service, timeout)
        except Exception as exc:  # a dependency is down: that is the check's answer
            logger.warning("event-flow check could not run: %s", exc, exc_info=exc)
            return FlowResult(
                ok=False,
                missing=EventType.AGENT_STARTED,
                detail=f"the probe run could not start: {type(exc).__name__}: {exc}",
            )


async def _check(service: AgentServicePort, timeout: float) -> FlowResult:
    layer = events_layer()  # the probe channel stands for a socket's, on the events' layer
    user, thread = await database_sync_to_async(_probe_thread)()
    channel = await layer.new_channel("healthz.")
    inbox = Inbox([functools.partial(layer.receive, channel)])
    group = thread_group(thread.id)
    started = time.monotonic()
    result = FlowResult(ok=False)
    try:
        await layer.group_add(group, channel)
        ack = await service.submit(
            thread_id=thread.id,
            user=user,
            text=PROBE_TEXT,
            client_msg_id=uuid.uuid4().hex,
            probe=True,
        )
        result.run_id = str(ack.run_id)
        final = await _collect(inbox, result, started=started, timeout=timeout)
        _judge(result, final, timeout=timeout)
    finally:
        inbox.close()
        try:
            await layer.group_discard(group, channel)
            await database_sync_to_async(_prune_probe_threads)()
        except Exception as exc:  # noqa: BLE001 - cleanup only; the group entry expires anyway
            logger.warning("event-flow check could not clean up: %s", exc)
    return result


async def _collect(
    inbox: Inbox, result: FlowResult, *, started: float, timeout: float
) -> dict[str, Any] | None:
    """Records the probe run's events as they reach the probe channel; returns its
    agent_completed, or None if it did not come within `timeout`."""
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            message = await asyncio.wait_for(inbox.get(), remaining)
        except TimeoutError:
            return None
        if message.get("type") != "thread.event":
            continue
        event = json.loads(message["text"])
        # The probe channel stands for a socket: what reaches it counts as delivered, so
        # that probe runs do not look like emitted events that no socket received.
        metrics.EVENTS_DELIVERED.labels(type=event["type"]).inc()
        result.seen.append(event["type"])
        result.timings_ms.setdefault(event["type"], round((time.monotonic() - started) * 1000, 1))
        if event["type"] == EventType.AGENT_COMPLETED:
            return cast(dict[str, Any], event)


def _judge(result: FlowResult, final: dict[str, Any] | None, *, timeout: float) -> None:
    """Sets the verdict: the first event missing from the sequence, or a wrong answer."""
    result.missing = first_missing(result.seen)
    if result.missing is not None:
        result.detail = (
            f"{result.missing} did not arrive in order within {timeout:g} s "
            f"(seen: {', '.join(result.seen) or 'nothing'})"
        )
    elif (
        final is None
        or final["data"].get("status") != "completed"
        or ("42" not in final["data"].get("text", ""))
    ):
        result.missing = EventType.AGENT_COMPLETED
        result.detail = f"the probe run did not complete with the answer: {final}"
    else:
        result.ok = True
