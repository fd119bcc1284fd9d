"""A socket's receive from the channel layer, told apart from everything else that can
raise while a consumer runs: only a failure of the layer itself is a channel-layer fault."""

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ChannelLayerReceiveError(Exception):
    """The channel layer's receive for this socket failed (Redis restarted or gone)."""


class GuardedLayerReceive:
    """Mixin for a channels consumer: AsyncConsumer.__call__ assigns the layer's receive to
    `channel_receive`, and this wraps it so that its failures, and only those, raise
    ChannelLayerReceiveError (chained to what the layer raised)."""

    _layer_receive: Receive

    @property
    def channel_receive(self) -> Receive:
        """This socket's receive from the channel layer, guarded."""
        return self._receive_from_layer

    @channel_receive.setter
    def channel_receive(self, layer_receive: Receive) -> None:
        self._layer_receive = layer_receive

    async def _receive_from_layer(self) -> dict[str, Any]:
        try:
            return await self._layer_receive()
        except Exception as exc:
            raise ChannelLayerReceiveError(str(exc)) from exc
