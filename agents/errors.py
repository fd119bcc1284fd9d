"""Errors of the agent runtime, each with a wire code."""

from chat.errors import NetraError


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


def run_in_progress() -> NetraError:
    """Returns the answer to a second message while a run is active on the thread."""
    return NetraError(
        "run_in_progress",
        "A run is active on this thread; wait for it to finish or cancel it.",
        status=409,
    )


def run_not_active() -> NetraError:
    """Returns the answer to cancelling a run that is not active."""
    return NetraError("run_not_active", "That run is not active.", status=409)


def run_not_found() -> NetraError:
    """Returns the answer for a missing run and another user's alike."""
    return NetraError("run_not_found", "No such run.", status=404)
