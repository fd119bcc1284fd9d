"""Start-up checks: a missing or unusable channel layer is an error, not a silent mode."""

from typing import Any

from channels.exceptions import InvalidChannelLayerError
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from chat.layers import EVENTS_ALIAS


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
    try:
        layer = get_channel_layer()
    except (InvalidChannelLayerError, ImportError, TypeError, ValueError, KeyError) as exc:
        return [
            Error(
                f"The channel layer cannot be built: {exc}",
                hint="Check CHANNEL_LAYERS['default'] (BACKEND and CONFIG).",
                id="netra.E002",
            )
        ]
    if layer is None:
        return [Error("The channel layer is not configured.", id="netra.E001")]
    if EVENTS_ALIAS in layers:
        try:
            get_channel_layer(EVENTS_ALIAS)
        except (InvalidChannelLayerError, ImportError, TypeError, ValueError, KeyError) as exc:
            return [
                Error(
                    f"The thread events' channel layer cannot be built: {exc}",
                    hint="Check CHANNEL_LAYERS['events'], or set REDIS_EVENTS_LAYER=core.",
                    id="netra.E002",
                )
            ]
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
