"""Errors of the agent runtime, each with a wire code (the codes are listed in
chat.errors.ErrorCode; the run API's answers are defined there too, since chat answers them
on the socket)."""

from chat.errors import run_in_progress, run_not_active, run_not_found

__all__ = [
    "AgentFailure",
    "ToolCrashedError",
    "ToolError",
    "agent_unavailable",
    "run_in_progress",
    "run_not_active",
    "run_not_found",
]


class ToolError(Exception):
    """An expected tool failure (bad input, division by zero): reported in tool_completed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ToolDefinitionError(TypeError):
    """A tool's signature cannot be described as JSON schema (the system check names it)."""


class ToolCrashedError(RuntimeError):
    """A tool raised something it should not have; chained to the original exception."""


class AgentFailure(Exception):
    """A run failure to report as agent_error (code, message, whether retrying may help)."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


def agent_unavailable(name: str) -> AgentFailure:
    """The failure of a run whose thread's agent is no longer configured on this server."""
    return AgentFailure(
        "agent_unavailable",
        f"The agent {name!r} of this thread is not configured on this server; "
        "start a new thread with another agent.",
        retryable=False,
    )
