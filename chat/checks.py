"""Start-up checks: a missing or unusable channel layer is an error, not a silent mode."""

from typing import Any

from channels.exceptions import InvalidChannelLayerError
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from chat.layers import EVENTS_ALIAS
from netra_site import autobahn_timers


def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Checks that CHANNEL_LAYERS names a default layer that can be built, and that the
    thread events' own layer, if one is set, can be built too."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if not layers or "default" not in layers:
        return [
            Error(
                "CHANNEL_LAYERS has no 'default' layer.",
                hint="Set REDIS_URL, or leave it unset for the in-memory layer.",
                id="netra.E001",
            )
        ]
    layer, problem = _build(
        "default", "The channel layer", "Check CHANNEL_LAYERS['default'] (BACKEND and CONFIG)."
    )
    if problem is not None:
        return [problem]
    if layer is None:
        return [Error("The channel layer is not configured.", id="netra.E001")]
    if EVENTS_ALIAS in layers:
        _, problem = _build(
            EVENTS_ALIAS,
            "The thread events' channel layer",
            "Check CHANNEL_LAYERS['events'], or set REDIS_EVENTS_LAYER=core.",
        )
        if problem is not None:
            return [problem]
    messages: list[CheckMessage] = []
    expiry = layers["default"].get("CONFIG", {}).get("group_expiry", 86400)
    if expiry < 3600:
        messages.append(
            Warning(
                f"group_expiry is {expiry} s: sockets open longer silently leave their groups.",
                hint="Keep CHANNEL_GROUP_EXPIRY at or above the server's websocket timeout.",
                id="netra.W001",
            )
        )
    return messages


def _build(alias: str, what: str, hint: str) -> tuple[Any, Error | None]:
    """Builds the layer of `alias`; returns it, or the netra.E002 error saying why not."""
    try:
        return get_channel_layer(alias), None
    except (InvalidChannelLayerError, ImportError, TypeError, ValueError, KeyError) as exc:
        return None, Error(f"{what} cannot be built: {exc}", hint=hint, id="netra.E002")


def check_daphne_timers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Checks that txaio's batched timer, whose early timeouts a daphne process mends at
    start-up (netra_site/autobahn_timers.py), is still the class that mend probes."""
    try:
        autobahn_timers.probe(autobahn_timers.batched_timer())
    except autobahn_timers.TimerChanged as exc:
        return [
            Error(
                f"daphne's WebSocket timeouts cannot be checked: {exc}",
                hint="Pin txaio to a release netra_site/autobahn_timers.py knows, or update it.",
                id="netra.E003",
            )
        ]
    return []
