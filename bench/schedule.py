"""The streaming schedule both contenders follow: a scripted model sending CHUNKS chunks
at RATE chunks a second. Each chunk's text carries the wall-clock time the model sent it,
so the client measures lateness (receipt minus that time) the same way for B and N."""

import asyncio
import time
from collections.abc import AsyncIterator

RATE = 20.0  # chunks a second
CHUNKS = 40  # two seconds of text
PREFIX = "stream:"  # a user message starting with this asks for a scheduled answer


def chunk_text(n: int, sent: float) -> str:
    """The n-th chunk of an answer; `sent` is when the model sent it."""
    return f"w{n}@{sent:.6f} "


def sent_at(text: str) -> float | None:
    """The send time carried by a chunk's text, or None for other text."""
    head, sep, tail = text.partition("@")
    if not sep or not head.startswith("w"):
        return None
    try:
        return float(tail.strip())
    except ValueError:
        return None


async def chunks(rate: float = RATE, count: int = CHUNKS) -> AsyncIterator[str]:
    """Yields the chunks on the model's schedule: chunk n is due n/rate s after the start.

    A consumer that falls behind gets the late chunks at once (a model's stream is buffered
    by the connection), each still stamped with the time it was due."""
    start = time.time()
    for n in range(count):
        due = start + n / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield chunk_text(n, due)
