"""daphne's WebSocket timeouts, made to wait at least as long as they are set to.

daphne speaks WebSocket through autobahn, which schedules its timeouts (the closing
handshake, the opening handshake, the keepalive ping) on txaio's batched timer. That timer
(txaio 26.6.1, the newest release) cuts the due time down to a whole second before it rounds
it to its 200 ms bucket: a timeout fires at the last whole second before it is due. The
closing handshake's 1 s therefore ends after anything between 0 and 1 s. When the server
closes a socket (a 4400 refusal, 4401, 4429, 4503) and the client's close reply takes longer
than what was left of that second, autobahn resets the connection, and the client, which had
not read them yet, loses the `error` frame and the close code with it: it sees 1006 and no
reason. Measured here: 1 of 163 refusals in the fuzz test of tests/test_bad_input.py under
load, with the reset 4 ms after the close; tests/test_close_handshake.py shows it on demand.

`install()` probes the timer and, only while it fires early, asks it for one second more:
the truncation then takes each timeout back to between the time set and one second after.
The system check netra.E003 (chat/checks.py) reports a timer that moved or changed its
arguments, so that `manage.py check` says so before a daphne worker refuses to start.
"""

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# Where in a second the probe asks for its timeout: asked late in a second, a timeout loses
# most of it to the truncation (at 100.95, 1 s becomes 0.05 s).
_PROBE_TIMES = (100.05, 100.5, 100.95)
_PROBE_DELAY = 1.0
_BUCKET_MS = 200.0  # autobahn's bucket (WebSocketServerFactory)
_EXTRA_SECONDS = 1.0


class _NoCall:
    """The probe's stand-in for a scheduled call: nothing is ever run."""

    def cancel(self) -> None:
        """Nothing to cancel."""


def shortest_wait(timer_class: Any) -> float:
    """The shortest time a timer of `timer_class` waits for a timeout of 1 s, over the
    probe's points in a second: exactly what it asks its reactor for, nothing is run."""
    waits: list[float] = []
    for now in _PROBE_TIMES:

        def schedule(delay: float, *_args: Any, **_kwargs: Any) -> _NoCall:
            waits.append(delay)
            return _NoCall()

        timer = timer_class(
            _BUCKET_MS,
            100,
            seconds_provider=lambda now=now: now,
            delayed_call_creator=schedule,
        )
        timer.call_later(_PROBE_DELAY, lambda: None)
    return min(waits)


class TimerChanged(RuntimeError):
    """txaio's batched timer is no longer what this module probes and mends."""


def batched_timer() -> Any:
    """txaio's batched timer class, a private name: raises TimerChanged if it moved."""
    try:
        from txaio._common import _BatchedTimer
    except ImportError as exc:
        raise TimerChanged(f"txaio._common._BatchedTimer does not import: {exc}") from exc
    return _BatchedTimer


def probe(timer_class: Any) -> float:
    """shortest_wait(timer_class); raises TimerChanged if the class no longer takes the
    probe's arguments."""
    try:
        return shortest_wait(timer_class)
    except (TypeError, AttributeError) as exc:
        raise TimerChanged(f"{timer_class.__qualname__} no longer takes the probe: {exc}") from exc


def install(timer_class: Any = None) -> bool:
    """Makes txaio's batched timeouts (or `timer_class`'s) wait at least as long as asked,
    if they do not yet; returns whether it changed anything. Raises TimerChanged if the
    timer cannot be probed, RuntimeError if it still fires early."""
    if timer_class is None:
        timer_class = batched_timer()
    if probe(timer_class) >= _PROBE_DELAY:
        return False  # correct already, or mended already
    asked = timer_class.call_later

    def call_later(self: Any, delay: float, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return asked(self, delay + _EXTRA_SECONDS, func, *args, **kw)

    timer_class.call_later = call_later
    waited = probe(timer_class)
    if waited < _PROBE_DELAY:
        timer_class.call_later = asked
        raise RuntimeError(
            f"txaio's batched timer still waits {waited:.2f} s for a 1 s timeout after "
            "netra_site.autobahn_timers.install(): its rounding changed; see that module"
        )
    logger.info(
        "txaio's batched timer fired up to 1 s early; daphne's WebSocket timeouts in this "
        "process now wait 0-1 s longer than set (netra_site/autobahn_timers.py)"
    )
    return True
