"""A run's side of approvals (docs/protocol.md): asking, and going on after the answer.

Asking (`request_approval`, from the dispatcher right after the call's tool_executing):
approval_requested is logged in the same transaction as the Approval row and the run's
status `waiting`; then `ApprovalPending` ends the run's task (no close-out, nothing held).

Going on (`settle_pending`, by the worker that took the run over with the answer, see
agents/approvals.py): for each approval the journal shows pending, approval_resolved with
the recorded decision, then approved: the tool runs under the same tool_call_id (no second
tool_executing); denied: tool_completed{denied, error{denied, the comment}}; expired:
tool_completed{error, error{approval_expired}}. The agent then continues from the journal.
"""

import functools
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from agents import approvals, selectors
from agents.emitter import RunEmitter
from agents.services import Adoption, RunSpec
from agents.tooldef import Tool, ToolContext
from chat import metrics
from chat.errors import report_exception
from chat.events import isoformat
from chat.runevents import fold_run

logger = logging.getLogger("netra.approvals")

DECISIONS = {"approve": "approved", "deny": "denied"}


class ApprovalPending(BaseException):
    """The run waits for its user's answer: raised by the dispatcher once approval_requested
    is logged, it unwinds the agent (a BaseException, so an agent's `except Exception`
    does not swallow it) and ends the run's task without a close-out."""

    def __init__(self, approval_id: uuid.UUID) -> None:
        super().__init__(f"waiting for approval {approval_id}")
        self.approval_id = approval_id


def approval_reason(tool: Tool | None, args: Any, context: ToolContext | None) -> str | None:
    """Returns why this call must be approved first, or None when it may run now.

    `requires_approval=True` always asks; a callable `(args, ctx) -> reason | None`
    decides per call. A policy that raises asks (with a generic reason) rather than let
    the call through: it is reported, like a crashing tool."""
    if tool is None or not tool.requires_approval or not isinstance(args, dict):
        return None
    rule = tool.requires_approval
    if rule is True:
        return f"The {tool.name} tool asks before it acts."
    if not callable(rule):
        return None
    try:
        reason = rule(args, context) if context is not None else rule(args, None)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a broken policy must not let the call through
        report_exception(exc, "approval policy failed", tool=tool.name)
        return f"The {tool.name} tool asks before it acts (its policy could not decide)."
    return None if reason is None else (str(reason) or f"The {tool.name} tool asks first.")


async def request_approval(
    emitter: RunEmitter, *, tool_call_id: str, tool: str, args: Any, reason: str
) -> uuid.UUID:
    """Logs approval_requested (with the Approval row and the run's status `waiting`, in
    one transaction) and returns the approval's id."""
    approval_id = uuid.uuid4()
    expires_at = approvals.expires_at_from_now(settings.APPROVAL_TIMEOUT)
    await emitter.approval_requested(
        approval_id=str(approval_id),
        tool_call_id=tool_call_id,
        tool=tool,
        args=args,
        reason=reason,
        expires_at=isoformat(expires_at),
        in_transaction=functools.partial(
            approvals.run_request_approval,
            run_id=emitter.run_id,
            approval_id=approval_id,
            tool_call_id=tool_call_id,
            tool=tool,
            args=args,
            reason=reason,
            expires_at=expires_at,
        ),
    )
    metrics.APPROVALS.labels(decision="requested").inc()
    logger.info(
        "run %s waits for approval of %s",
        emitter.run_id,
        tool,
        extra={"run_id": emitter.run_id, "approval_id": approval_id, "tool": tool},
    )
    return approval_id


def _outcome_error(decision: str, comment: str) -> tuple[str, dict[str, str]]:
    if decision == "denied":
        return "denied", {"code": "denied", "message": comment or "The user denied the call."}
    return "error", {
        "code": "approval_expired",
        "message": f"Nobody answered the approval within {settings.APPROVAL_TIMEOUT:g} s.",
    }


async def logged_journal(emitter: RunEmitter, spec: RunSpec) -> list[dict[str, Any]]:
    """The run's journal as logged, once the emitter's queued events are in the log (a read
    of the log never misses what this run has emitted)."""
    await emitter.settle()
    return await database_sync_to_async(selectors.run_journal)(spec=spec)


async def settle_pending(
    *,
    emitter: RunEmitter,
    spec: RunSpec,
    dispatcher: Any,
    allowed: frozenset[str] | None = None,
) -> None:
    """Emits the outcome of every approval the journal shows pending and decided: its
    approval_resolved, then the call's run (approved) or its tool_completed."""
    journal = await logged_journal(emitter, spec)
    pending = fold_run(journal).pending_approvals
    if not pending:
        return
    decided = await database_sync_to_async(approvals.decisions_of)(approval_ids=list(pending))
    for approval in pending.values():
        if approval.approval_id not in decided:
            logger.error(
                "run %s continued with approval %s still unanswered",
                spec.run_id,
                approval.approval_id,
                extra={"run_id": spec.run_id, "approval_id": approval.approval_id},
            )
            continue
        decision, comment = decided[approval.approval_id]
        await emitter.approval_resolved(
            approval_id=approval.approval_id, decision=decision, comment=comment
        )
        metrics.APPROVALS.labels(decision=decision).inc()
        if decision == "approved":
            emitter.reopen(approval.tool_call_id)
            await dispatcher.call(
                emitter,
                approval.tool,
                approval.args,
                approval.tool_call_id,
                allowed=allowed,
                approved=True,
            )
            continue
        status, error = _outcome_error(decision, comment)
        await emitter.tool_completed(
            tool_call_id=approval.tool_call_id,
            tool=approval.tool,
            status=status,
            error=error,
            duration_ms=0,
        )


class ApprovalCommands:
    """The agent service's approval commands (agents/runtime.py's AgentService mixes them
    in): whichever worker receives an answer, or finds an approval expired, continues its
    run here through `continue_adopted`."""

    worker_id: str

    async def continue_adopted(self, adoption: Adoption) -> None:
        """Continues a taken-over run on this worker (AgentService defines it)."""
        raise NotImplementedError

    async def resolve_approval(
        self, *, approval_id: uuid.UUID, user: Any, decision: str, comment: str = ""
    ) -> None:
        """Answers an approval of the user's (`approve` or `deny`) and continues its run on
        this worker; raises approval_not_found (404) and approval_resolved (409)."""
        adoption = await database_sync_to_async(approvals.run_resolve_approval)(
            approval_id=approval_id,
            user=user,
            decision=DECISIONS[decision],
            comment=comment,
            worker_id=self.worker_id,
        )
        if adoption is not None:
            await self.continue_adopted(adoption)

    async def expire_approvals(self) -> int:
        """Resolves the approvals past APPROVAL_TIMEOUT as expired and continues their runs
        here (the background sweep); refreshes the pending-approval gauges."""
        adoptions = await database_sync_to_async(approvals.run_expire_approvals)(
            worker_id=self.worker_id
        )
        for adoption in adoptions:
            await self.continue_adopted(adoption)
        pending, oldest = await database_sync_to_async(approvals.pending_summary)()
        metrics.APPROVALS_PENDING.set(pending)
        metrics.APPROVAL_OLDEST_PENDING.set(oldest)
        return len(adoptions)

    async def pending_approvals(self, *, thread_id: uuid.UUID) -> list[dict[str, Any]]:
        """The thread's approvals waiting for an answer (the thread JSON lists them)."""
        return await database_sync_to_async(approvals.pending_approvals)(thread_id=thread_id)
