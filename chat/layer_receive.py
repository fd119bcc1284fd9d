"""A socket's receive from the channel layers, told apart from everything else that can
raise while a consumer runs: only a failure of a layer itself is a channel-layer fault."""

import functools
from typing import Any

from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch

from chat.layers import Receive, has_events_layer
from chat.router import EventsInbox, events_router


class ChannelLayerReceiveError(Exception):
    """The channel layer's receive for this socket failed (Redis restarted or gone)."""


async def guarded(receive: Receive) -> dict[str, Any]:
    """What `receive` returns; a failure of it raises ChannelLayerReceiveError (chained)."""
    try:
        return await receive()
    except Exception as exc:
        raise ChannelLayerReceiveError(str(exc)) from exc


class GuardedLayerReceive:
    """Mixin for a channels consumer: AsyncConsumer.__call__ assigns the layer's receive to
    `channel_receive`, and this wraps it so that its failures, and only those, raise
    ChannelLayerReceiveError (chained to what the layer raised).

    `serve` runs the consumer as AsyncConsumer.__call__ does, with one more source where
    thread events have a layer of their own (chat/layers.py): the socket's inbox of them,
    `events` (chat/router.py), whose messages go to the same dispatch, one at a time."""

    _layer_receive: Receive
    events: EventsInbox | None = None

    @property
    def channel_receive(self) -> Receive:
        """This socket's receive from the channel layer, guarded."""
        return self._receive_from_layer

    @channel_receive.setter
    def channel_receive(self, layer_receive: Receive) -> None:
        self._layer_receive = layer_receive

    async def _receive_from_layer(self) -> dict[str, Any]:
        return await guarded(self._layer_receive)

    async def serve(self, scope: Any, receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__ (channels 4.3; tests/test_layer_receive.py notices a change) with
        the events inbox as a third source."""
        consumer: Any = self
        consumer.scope = scope
        consumer.channel_layer = get_channel_layer(consumer.channel_layer_alias)
        consumer.channel_name = await consumer.channel_layer.new_channel()
        self.channel_receive = functools.partial(
            consumer.channel_layer.receive, consumer.channel_name
        )
        consumer.base_send = send
        sources = [receive, self.channel_receive]
        if has_events_layer():
            self.events = EventsInbox()
            sources.append(self.events.receive)
        try:
            await await_many_dispatch(sources, consumer.dispatch)
        except StopConsumer:
            return
        finally:
            if self.events is not None:  # however the socket ended
                events_router().discard(self.events)
