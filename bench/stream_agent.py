"""A bench-only agent that streams an answer on the scripted model's schedule
(bench/schedule.py). N's bench server registers it (NETRA_AGENTS=bench_stream=...); the
product never imports it."""

from typing import Any

from bench import schedule


class ScheduledAgent:
    """Streams CHUNKS partial_result deltas at RATE a second, nothing else."""

    name = "bench_stream"
    description = "Bench only: streams a scripted answer at a fixed rate."
    tools: tuple[str, ...] = ()
    can_continue = False

    async def run(self, run_input: Any, emitter: Any, tools: Any) -> None:
        """Emits each chunk as the schedule releases it."""
        async for text in schedule.chunks():
            await emitter.partial(text)
