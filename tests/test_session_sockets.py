"""Cookie sockets end with their session: a logout (the site's or the admin's) closes the
sockets of that session with 4401, a password change those of the user's sessions."""

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def log_out(cookie: str, path: str) -> int:
    """Posts to a logout view with the session of `cookie`; returns the status (sync)."""
    client = Client()
    client.cookies["sessionid"] = cookie.removeprefix("sessionid=")
    return client.post(path).status_code


async def assert_closed_unauthenticated(comm: Any) -> None:
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["type"], frame["code"], frame["close_code"]) == (
        "error",
        "unauthenticated",
        4401,
    ), frame
    assert await helpers.expect_close(comm) == 4401
    await comm.disconnect()


async def assert_open(comm: Any) -> None:
    await helpers.send(comm, {"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}


@pytest.mark.parametrize("path", ["/accounts/logout/", "/admin/logout/"])
async def test_logout_closes_the_sockets_of_that_session_only(
    user: Any, thread: Any, service: Any, path: str
) -> None:
    user.is_staff = True
    await database_sync_to_async(user.save)()
    leaving = await database_sync_to_async(helpers.session_cookie)(user)
    staying = await database_sync_to_async(helpers.session_cookie)(user)
    victim, hello = await helpers.open_socket(thread.id, cookie=leaving)
    assert hello["type"] == "connection_established"
    bystander, _ = await helpers.open_socket(thread.id, cookie=staying)
    assert await database_sync_to_async(log_out)(leaving, path) in (200, 302)
    await assert_closed_unauthenticated(victim)
    await assert_open(bystander)
    await bystander.disconnect()
    refused = helpers.communicator(thread.id, cookie=leaving)
    await refused.connect()
    assert (await refused.receive_json_from(timeout=5))["close_code"] == 4401
    await refused.disconnect()


async def test_a_password_change_closes_the_cookie_sockets_of_the_user(
    user: Any, thread: Any, token: str, service: Any
) -> None:
    first = await database_sync_to_async(helpers.session_cookie)(user)
    second = await database_sync_to_async(helpers.session_cookie)(user)
    cookie_sockets = [
        (await helpers.open_socket(thread.id, cookie=cookie))[0] for cookie in (first, second)
    ]
    token_socket, _ = await helpers.open_socket(thread.id, token=token)

    def change_password() -> None:
        user.set_password("a-New-Secret-456")
        user.save()

    await database_sync_to_async(change_password)()
    for comm in cookie_sockets:
        await assert_closed_unauthenticated(comm)
    await assert_open(token_socket)  # a token does not depend on the password
    await token_socket.disconnect()


async def test_a_save_that_keeps_the_password_closes_no_socket(
    user: Any, thread: Any, service: Any
) -> None:
    cookie = await database_sync_to_async(helpers.session_cookie)(user)
    comm, _ = await helpers.open_socket(thread.id, cookie=cookie)
    user.first_name = "Alice"
    await database_sync_to_async(user.save)()
    await assert_open(comm)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_the_admin_password_change_closes_the_other_sessions_sockets(
    user: Any, thread: Any, service: Any
) -> None:
    user.is_staff = True
    await database_sync_to_async(user.save)()
    changing = await database_sync_to_async(helpers.session_cookie)(user)
    other = await database_sync_to_async(helpers.session_cookie)(user)
    comm, _ = await helpers.open_socket(thread.id, cookie=other)

    def change_password() -> int:
        client = Client()
        client.cookies["sessionid"] = changing.removeprefix("sessionid=")
        form = {
            "old_password": "pw-Secret-123",
            "new_password1": "a-New-Secret-456",
            "new_password2": "a-New-Secret-456",
        }
        return client.post("/admin/password_change/", form).status_code

    assert await database_sync_to_async(change_password)() == 302
    await assert_closed_unauthenticated(comm)


async def test_deactivating_a_user_closes_its_cookie_sockets_with_4403(
    user: Any, thread: Any, service: Any
) -> None:
    cookie = await database_sync_to_async(helpers.session_cookie)(user)
    comm, _ = await helpers.open_socket(thread.id, cookie=cookie)
    user.is_active = False
    await database_sync_to_async(user.save)()
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], frame["close_code"]) == ("forbidden", 4403)
    assert await helpers.expect_close(comm) == 4403
    await comm.disconnect()
