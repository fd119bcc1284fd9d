"""BACKGROUND_TASKS: off starts no loop at all; on starts every loop, housekeeping included."""

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat import housekeeping
from chat.connections import WORKER_ID
from chat.models import ServerProcess
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def running(task: asyncio.Task[None] | None) -> bool:
    """True if the loop's task exists and has not ended."""
    return task is not None and not task.done()


async def test_with_background_tasks_off_a_socket_and_a_submit_start_no_loop(
    thread: Any, token: str, service: Any, settings: Any
) -> None:
    settings.BACKGROUND_TASKS = False
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 1+1"))
    await helpers.receive_until(comm, helpers.completed)
    await service.submit(thread_id=thread.id, user=thread.owner, text="hi", client_msg_id="b")
    await service.wait_idle()

    assert not running(service._background)  # no run heartbeat, no run reaper
    assert not running(housekeeping._task)
    assert not await database_sync_to_async(ServerProcess.objects.exists)()
    await comm.disconnect()


async def test_with_background_tasks_on_a_submit_starts_housekeeping_too(
    thread: Any, service: Any, settings: Any
) -> None:
    settings.BACKGROUND_TASKS = True
    settings.PROCESS_HEARTBEAT_INTERVAL = 0.05
    try:
        await service.submit(thread_id=thread.id, user=thread.owner, text="hi", client_msg_id="b")
        assert running(service._background)
        assert running(housekeeping._task)
        beat = None
        for _ in range(100):
            beat = await database_sync_to_async(
                ServerProcess.objects.filter(worker_id=WORKER_ID).first
            )()
            if beat is not None:
                break
            await asyncio.sleep(0.05)
        assert beat is not None, "housekeeping wrote no process heartbeat"
        await service.wait_idle()
    finally:
        await housekeeping.stop()
