"""The one timer per process that watches every socket (chat.watch.Ticker): no task per
idle socket, each socket's tail check and re-join still on time, a slow re-join of one
socket delays no other."""

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from chat import watch as watch_module
from chat.broadcaster import thread_group
from chat.watch import TICKER
from tests.test_delivery import FakeLayer, make

pytestmark = [pytest.mark.django_db(transaction=True)]

TICK = 0.05


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setattr(watch_module, "TAIL_CHECK_AFTER", TICK)
    settings.WS_GROUP_REFRESH_INTERVAL = 3600  # no re-join unless a test makes one due


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(TICK / 5)


async def test_idle_sockets_share_one_timer_and_each_gets_its_tail_check(thread: Any) -> None:
    before = len(asyncio.all_tasks())
    made = [make(thread) for _ in range(50)]
    for delivery, _, _ in made:
        await delivery.join()
        delivery.start()  # a new delivery's tail is dirty: it is checked once
    assert len(asyncio.all_tasks()) <= before + 1
    await wait_for(lambda: all(("send", "tail.check") in layer.calls for _, _, layer in made))
    await asyncio.sleep(TICK * 4)  # idle now: no more checks, no task per socket
    assert all(layer.calls.count(("send", "tail.check")) == 1 for _, _, layer in made)
    assert all(d.watch_task is None or d.watch_task.done() for d, _, _ in made)
    assert len(asyncio.all_tasks()) <= before + 1
    for delivery, _, _ in made:
        delivery.stop()
    assert TICKER.task is not None
    await wait_for(TICKER.task.done)


class HangingLayer(FakeLayer):
    """A layer whose group_add never returns (a Redis that stopped answering)."""

    async def group_add(self, group: str, channel: str) -> None:
        await asyncio.Event().wait()


async def test_a_hanging_rejoin_delays_no_other_socket(thread: Any) -> None:
    stuck, _, _ = make(thread)
    stuck.layer = HangingLayer()
    fine, _, layer = make(thread)
    await fine.join()
    stuck.start()
    fine.start()
    stuck.rejoin_at = 0.0  # due at the first tick; it hangs there
    fine.tail_dirty = False
    await wait_for(lambda: stuck.watch_task is not None)
    fine.expect_events()
    await wait_for(lambda: ("send", "tail.check") in layer.calls)
    stuck.stop()
    fine.stop()
    assert stuck.watch_task is not None
    await wait_for(stuck.watch_task.done)
    assert stuck.watch_task.cancelled()


class RecordingInMemoryLayer(InMemoryChannelLayer):
    """The in-process layer, recording the group_adds asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.adds = 0

    async def group_add(self, group: str, channel: str) -> None:
        self.adds += 1
        await super().group_add(group, channel)


async def test_the_in_process_layer_is_not_rejoined_before_its_group_expiry(
    thread: Any, settings: Any
) -> None:
    """A layer that can forget memberships (Redis) is re-joined every
    WS_GROUP_REFRESH_INTERVAL; the in-process one forgets a membership only at its
    group_expiry, so its idle sockets are re-joined (and their tails checked) at half that,
    and cost nothing meanwhile."""
    settings.WS_GROUP_REFRESH_INTERVAL = TICK * 2
    forgetful, _, fake = make(thread)
    local, _, _ = make(thread)
    in_process = RecordingInMemoryLayer()
    local.layer = in_process
    for delivery in (forgetful, local):
        await delivery.join()
        delivery.start()
    joined = in_process.adds
    await wait_for(lambda: fake.calls.count(("group_add", thread_group(thread.id))) >= 3)
    assert in_process.adds == joined
    assert local.rejoin_at - asyncio.get_running_loop().time() > in_process.group_expiry / 4
    for delivery in (forgetful, local):
        delivery.stop()


class GatedLayer(FakeLayer):
    """A layer whose group_add waits until the test opens the gate."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate

    async def group_add(self, group: str, channel: str) -> None:
        await self.gate.wait()
        await super().group_add(group, channel)


async def test_at_most_max_watches_run_at_once_and_every_socket_gets_its_turn(
    thread: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of sockets due in one tick would take more layer connections at once
    than a pool holds; the timer runs at most MAX_WATCHES and the others in later ticks."""
    monkeypatch.setattr(watch_module, "MAX_WATCHES", 2)
    gate = asyncio.Event()
    made = [make(thread) for _ in range(6)]
    for delivery, _, _ in made:
        await delivery.join()
        delivery.layer = GatedLayer(gate)
        delivery.start()
        delivery.rejoin_at = 0.0  # every re-join due at the next tick
    peak = 0
    for _ in range(10):
        await asyncio.sleep(TICK)
        peak = max(peak, len(TICKER.running))
    assert peak == 2
    gate.set()
    await wait_for(
        lambda: all(("group_add", thread_group(thread.id)) in d.layer.calls for d, _, _ in made)
    )
    for delivery, _, _ in made:
        delivery.stop()
