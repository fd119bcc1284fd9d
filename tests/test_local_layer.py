"""chat.layers.LocalChannelLayer, the embedded default: channels' in-memory layer with a
cheaper group_send and expiry sweep, and the same behaviour."""

import asyncio
from typing import Any

import pytest
from channels.exceptions import ChannelFull

from chat.layers import LocalChannelLayer


async def test_group_send_reaches_every_member_once_in_order() -> None:
    layer = LocalChannelLayer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("thread.a", channel)
    await layer.group_add("thread.b", channels[0])
    for n in range(5):
        await layer.group_send("thread.a", {"type": "thread.event", "seq": n})
    await layer.group_send("thread.b", {"type": "thread.event", "seq": 99})
    await layer.group_discard("thread.a", channels[2])
    await layer.group_send("thread.a", {"type": "thread.event", "seq": 5})
    got = [
        [(await layer.receive(c))["seq"] for _ in range(n)]
        for c, n in zip(channels, (7, 6, 5), strict=True)
    ]
    assert got == [[0, 1, 2, 3, 4, 99, 5], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4]]


async def test_each_member_gets_its_own_copy() -> None:
    layer = LocalChannelLayer()
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", one)
    await layer.group_add("g", two)
    await layer.group_send("g", {"type": "x", "n": 1})
    first = await layer.receive(one)
    first["n"] = 2
    assert (await layer.receive(two))["n"] == 1


async def test_a_full_channel_loses_the_message_and_no_other_member_does() -> None:
    layer = LocalChannelLayer(capacity=2)
    slow, fast = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", slow)
    await layer.group_add("g", fast)
    for n in range(3):
        await layer.group_send("g", {"type": "x", "n": n})
        assert (await layer.receive(fast))["n"] == n
    assert [(await layer.receive(slow))["n"] for _ in range(2)] == [0, 1]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(slow), 0.05)


async def test_expired_messages_and_memberships_are_swept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = LocalChannelLayer(expiry=0, group_expiry=0)
    monkeypatch.setattr(LocalChannelLayer, "SWEEP_EVERY", 0.0)
    stale = await layer.new_channel()
    await layer.group_add("g", stale)
    await layer.group_send("g", {"type": "x"})
    layer.groups["g"][stale] = 1.0  # joined long ago
    await asyncio.sleep(0.01)
    await layer.group_send("g", {"type": "y"})  # the sweep runs first
    assert layer.groups.get("g", {}) == {} and stale not in layer.channels


async def test_a_waiting_receiver_gets_what_is_sent_later_in_order() -> None:
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    await layer.send(channel, {"type": "x", "n": 1})
    await layer.group_send("g", {"type": "x", "n": 2})
    assert (await waiting)["n"] == 1
    assert (await layer.receive(channel))["n"] == 2
    assert channel not in layer.channels  # drained and nobody waits: nothing is kept


async def waiting_receivers(layer: LocalChannelLayer, n: int) -> tuple[str, list[Any]]:
    """A new channel and n receivers already waiting on it."""
    channel = await layer.new_channel()
    receivers = [asyncio.ensure_future(layer.receive(channel)) for _ in range(n)]
    await asyncio.sleep(0)
    return channel, receivers


async def test_two_receivers_on_one_channel_get_one_message_each() -> None:
    layer = LocalChannelLayer()
    channel, (first, second) = await waiting_receivers(layer, 2)
    await layer.send(channel, {"type": "x", "n": 1})
    await layer.send(channel, {"type": "x", "n": 2})
    assert sorted([(await first)["n"], (await second)["n"]]) == [1, 2]


async def test_a_receiver_cancelled_after_its_wake_up_hands_the_message_on() -> None:
    layer = LocalChannelLayer()
    channel, (woken, other) = await waiting_receivers(layer, 2)
    await layer.send(channel, {"type": "x", "n": 1})  # wakes `woken`, which has not run yet
    woken.cancel()
    assert (await asyncio.wait_for(other, 1))["n"] == 1
    assert woken.cancelled()


async def test_a_send_to_a_full_channel_raises_channel_full_and_keeps_what_it_had() -> None:
    layer = LocalChannelLayer(capacity=2)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "n": 1})
    await layer.send(channel, {"type": "x", "n": 2})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "x", "n": 3})
    assert [(await layer.receive(channel))["n"] for _ in range(2)] == [1, 2]


async def test_a_sent_message_is_a_copy() -> None:
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    items = [1]
    sent = {"type": "x", "items": items}
    await layer.send(channel, sent)
    items.append(2)
    assert (await layer.receive(channel))["items"] == [1]
