"""The pipeline of a run's emitter (agents/emitter.py): every event is queued for the log
in order, the log writer commits them in batches, and only then is each sent, in order. At
most MAX_IN_FLIGHT of a run's events wait at once; a failed write is kept for the run's next
emit (`_raise_write_failure`) or for `settle`, never dropped."""

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from chat.events import RunFencedError, ThreadGoneError
from chat.runevents import EventType

logger = logging.getLogger("netra.runs")

InTransaction = Callable[[], None]

# What a stopped run's queued writes are expected to meet (`drain`): fenced, thread deleted.
EXPECTED_REFUSALS = (RunFencedError, ThreadGoneError)
# The most events of one run that may wait for the log at once (the pipeline's bound).
MAX_IN_FLIGHT = 64


class EventPipeline:
    """The queued writes of one run's emitter; RunEmitter (a dataclass) holds the state."""

    broadcaster: Any
    thread_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int | None
    halted: bool
    in_flight: dict["asyncio.Task[None]", Callable[[bool], object] | None]
    write_failure: BaseException | None

    async def _queue(
        self,
        type: EventType,
        data: dict[str, Any],
        *,
        in_transaction: InTransaction | None = None,
        logged: Callable[[], object] | None = None,
        settled: Callable[[bool], object] | None = None,
    ) -> "asyncio.Task[None]":
        while len(self.in_flight) >= MAX_IN_FLIGHT:  # a full pipeline: wait for room
            await self._retire_oldest()
            self._raise_write_failure()
            if self.halted:
                raise RunFencedError(f"run {self.run_id} is no longer written by this worker")
        written = self.broadcaster.log(
            thread_id=self.thread_id,
            run_id=self.run_id,
            type=type.value,
            data=data,
            in_transaction=in_transaction,
            attempt=self.attempt,
        )
        before = next(reversed(self.in_flight), None)
        task = asyncio.ensure_future(self._send_when_logged(written, before))
        self.in_flight[task] = settled
        if logged is not None:
            logged()
        task.add_done_callback(self._retire)
        return task

    async def _send_when_logged(self, written: Any, before: "asyncio.Task[None] | None") -> None:
        """Waits for the event's commit, then sends it. Each queued event finishes only after
        the one before it (refused or not), so they are sent, and their outcomes kept, in
        the order they were emitted."""
        try:
            event = await written
        finally:
            if before is not None and not before.done():
                await asyncio.wait([before])
        await self.broadcaster.notify(event)

    def _retire(self, task: "asyncio.Task[None]") -> None:
        """Takes a finished pipelined write out of the pipeline and keeps its outcome: a
        failure is held for the next emit (a fenced write halts the emitter at once)."""
        if task not in self.in_flight:
            return  # retired already
        settled = self.in_flight.pop(task)
        failure = asyncio.CancelledError() if task.cancelled() else task.exception()
        if settled is not None:
            settled(failure is None)
        if failure is None:
            return
        if isinstance(failure, RunFencedError):
            self.halted = True
        if self.write_failure is None:
            self.write_failure = failure

    async def _retire_oldest(self) -> None:
        oldest = next(iter(self.in_flight))
        await asyncio.wait([oldest])
        self._retire(oldest)

    def _raise_write_failure(self) -> None:
        failure, self.write_failure = self.write_failure, None
        if failure is not None:
            raise failure

    async def drain(self) -> None:
        """Waits until every queued event is logged or refused, raising nothing: for a run
        that stops without a word (released, taken over, its thread deleted), so that
        nothing of it is written after its task has ended. A refusal such a run expects
        (fenced, thread gone) is dropped; any other failure is logged with the run."""
        while self.in_flight:
            await self._retire_oldest()
        failure, self.write_failure = self.write_failure, None
        if failure is not None and not isinstance(failure, EXPECTED_REFUSALS):
            logger.warning(
                "a queued write of a stopped run failed: %s",
                failure,
                exc_info=failure,
                extra={"run_id": self.run_id, "thread_id": self.thread_id},
            )

    async def settle(self) -> None:
        """Waits until every queued event is logged and sent; raises the first write
        failure among them (once: the close-out that follows may write again)."""
        while self.in_flight:
            await self._retire_oldest()
        self._raise_write_failure()
