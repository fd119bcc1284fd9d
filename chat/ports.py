"""What `chat` needs of the agent service, reached only through the app registry."""

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from django.apps import apps


@dataclass(frozen=True)
class SubmitResult:
    """The answer to a submitted user message."""

    message_id: uuid.UUID
    run_id: uuid.UUID
    duplicate: bool


class AgentServicePort(Protocol):
    """The agent service as the chat layer sees it."""

    async def submit(
        self,
        *,
        thread_id: uuid.UUID,
        user: Any,
        text: str,
        client_msg_id: str,
        probe: bool = False,
    ) -> SubmitResult:
        """Starts a run for a user message, idempotent on (thread, client_msg_id); `probe`
        runs on an internal health-check thread."""

    async def cancel(self, *, run_id: uuid.UUID, user: Any) -> None:
        """Asks an active run of the user's to stop."""

    async def resolve_approval(
        self, *, approval_id: uuid.UUID, user: Any, decision: str, comment: str = ""
    ) -> None:
        """Answers an approval of the user's (`approve` or `deny`) and continues its run;
        raises approval_not_found and approval_resolved."""

    async def pending_approvals(self, *, thread_id: uuid.UUID) -> list[dict[str, Any]]:
        """Returns the thread's approvals waiting for an answer."""

    async def stop_thread_runs(self, *, thread_id: uuid.UUID, wait: float) -> list[uuid.UUID]:
        """Cancels a thread's active runs and waits up to `wait` seconds for them to end;
        returns the ids of those still active."""

    @property
    def agent_names(self) -> list[str]:
        """The names of the agents a thread may choose (NETRA_AGENTS and the built-ins)."""

    def agent_description(self, name: str) -> str | None:
        """What the agent of that name is for, or None if no such agent is configured."""

    def ensure_background(self) -> None:
        """Starts the process's heartbeat and reaper tasks if they are not running."""


def agent_service() -> AgentServicePort | None:
    """Returns the agent service that AgentsConfig.ready() built, or None if there is none."""
    try:
        config = apps.get_app_config("agents")
    except LookupError:
        return None
    service: AgentServicePort | None = getattr(config, "service", None)
    return service


def configured_agents() -> list[str]:
    """Returns the names of the agents a thread may choose (none without the service)."""
    service = agent_service()
    return [] if service is None else service.agent_names


def agent_description(name: str) -> str | None:
    """Returns what the agent of that name is for, or None if it is not configured."""
    service = agent_service()
    return None if service is None else service.agent_description(name)
