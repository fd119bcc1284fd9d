"""Hardening of the HTTP surface: every JSON route refuses bad bodies in JSON, bad static
and socket paths are clean refusals, client errors are logged as client errors (WARNING,
no traceback), failed logins are throttled, and /healthz/events reports a database that
fails during authentication as 503."""

import asyncio
import json
import re
import socket
import uuid
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async
from django.db import OperationalError
from django.test import AsyncClient, Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests import helpers
from tests.servers import Server

BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Every text field any route takes, each a lone surrogate (JSON escapes, as a client sends).
SURROGATE_BODY = b'{"title": "\\ud800", "text": "\\ud800", "client_msg_id": "\\ud800"}'
TEN_MB = 10 * 1024 * 1024


def json_routes(thread_id: str) -> list[str]:
    """Every /api/ URL of the site, with the thread id filled in (other ids random)."""
    found: list[str] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                found.append(prefix + str(entry.pattern))

    walk(get_resolver().url_patterns, "/")
    paths = [
        re.sub(r"<[^>]+>", str(uuid.uuid4()), p.replace("<uuid:thread_id>", thread_id))
        for p in found
    ]
    return [p for p in paths if p.startswith("/api/")]


def send_everywhere(client: Client, thread_id: str, body: bytes) -> list[tuple[str, Any]]:
    """Sends `body` with every method that carries one to every JSON route; returns the
    answers of the routes that take that method."""
    answers = []
    for path in json_routes(thread_id):
        for method in BODY_METHODS:
            response = client.generic(method, path, body, content_type="application/json")
            if response.status_code != 405:
                answers.append((f"{method} {path}", response))
    return answers


@pytest.fixture
def api_client(db: Any) -> tuple[Client, str]:
    user = helpers.make_user("prober")
    thread = helpers.make_thread(user)
    token = helpers.make_token(user)
    return Client(headers={"Authorization": f"Bearer {token}"}), str(thread.id)


def test_every_json_route_answers_a_lone_surrogate_with_400(
    api_client: tuple[Client, str],
) -> None:
    client, thread_id = api_client
    answers = send_everywhere(client, thread_id, SURROGATE_BODY)
    assert len(answers) >= 3, answers  # threads, messages, cancel at least
    for where, response in answers:
        assert response.status_code == 400, (where, response.status_code, response.content)
        assert response.json()["error"]["code"] == "bad_request", where


def test_every_json_route_refuses_a_nul_character(api_client: tuple[Client, str]) -> None:
    client, thread_id = api_client
    body = b'{"title": "a\\u0000b", "text": "a\\u0000b", "client_msg_id": "a\\u0000b"}'
    answers = send_everywhere(client, thread_id, body)
    for where, response in answers:
        if where.startswith(("POST /api/runs/", "DELETE ")):
            continue  # takes no fields: nothing of it is stored
        assert response.status_code == 400, (where, response.status_code, response.content)
        assert response.json()["error"]["code"] == "bad_request", where


def test_every_json_route_answers_an_oversized_body_with_413_in_json(
    api_client: tuple[Client, str], settings: Any
) -> None:
    client, thread_id = api_client
    for body in (b" " * TEN_MB, b" " * (getattr(settings, "API_MAX_BODY_BYTES", 65536) + 1)):
        answers = send_everywhere(client, thread_id, body)
        assert len(answers) >= 3, answers
        for where, response in answers:
            assert response.status_code == 413, (where, response.status_code)
            assert response.json()["error"]["code"] == "too_large", where


def test_a_body_that_is_no_json_object_is_400_on_every_json_route(
    api_client: tuple[Client, str],
) -> None:
    client, thread_id = api_client
    for body in (b"{", b"[1]", b'"x"', b"\xff\xfe"):
        for where, response in send_everywhere(client, thread_id, body):
            assert response.status_code == 400, (where, body, response.status_code)
            assert response.json()["error"]["code"] == "bad_request", where


# --- bad static and socket paths, through the ASGI application ----------------------------


@pytest.mark.django_db(transaction=True)
async def test_unknown_socket_paths_are_closed_4404_with_a_frame_in_process() -> None:
    user = await database_sync_to_async(helpers.make_user)("wanderer")
    token = await database_sync_to_async(helpers.make_token)(user)
    for path in ("/ws/chat/", "/ws/nope/", "/ws/chat/x/y/"):
        communicator = helpers.communicator("unused", token=token)
        communicator.scope["path"] = path
        connected, _ = await communicator.connect()
        assert connected, path
        frame = await communicator.receive_json_from()
        closed = await communicator.receive_output()
        assert (frame["type"], frame["code"], frame["close_code"]) == ("error", "not_found", 4404)
        assert closed == {"type": "websocket.close", "code": 4404}, path


# --- against a real daphne with DEBUG off ---------------------------------------------------


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return server.make_user("hardy")


def raw_request(server: Server, request: bytes) -> bytes:
    """Sends one raw HTTP request (paths exactly as given) and returns the status line."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[0]


def get(server: Server, path: bytes, host: bytes = b"127.0.0.1") -> bytes:
    return raw_request(
        server, b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    )


def post(
    server: Server,
    path: bytes,
    body: bytes,
    token: str | None = None,
    content_type: bytes = b"application/json",
    extra: bytes = b"",
) -> bytes:
    auth = b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b""
    auth += extra
    head = (
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + auth
        + b"Content-Type: "
        + content_type
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    return raw_request(server, head + body)


BAD_STATIC_PATHS = [
    b"/static/../../netra_site/settings.py",
    b"/static/%2e%2e/%2e%2e/netra_site/settings.py",
    b"/static/..%2f..%2fnetra_site/settings.py",
    b"/static/%2E%2E%2F%2E%2E%2Fnetra_site%2Fsettings.py",
    b"/static/chat/../../../../etc/passwd",
]


def test_bad_static_paths_are_404_over_the_network(server: Server) -> None:
    for path in BAD_STATIC_PATHS:
        assert get(server, path) == b"HTTP/1.1 404 Not Found", path


async def test_unknown_socket_paths_are_closed_4404_over_the_network(
    server: Server, token: str
) -> None:
    for path in ("/ws/chat/", "/ws/nope/", "/ws/"):
        async with websockets.connect(
            f"{server.ws}{path}", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert (frame["code"], ws.close_code) == ("not_found", 4404), path


def test_client_errors_are_warnings_without_a_traceback(server: Server, token: str) -> None:
    for path in BAD_STATIC_PATHS:
        get(server, path)
    assert get(server, b"/threads/", host=b"evil.example") == b"HTTP/1.1 400 Bad Request"
    surrogate = post(server, b"/api/threads/", b'{"title": "\\ud800"}', token)
    assert surrogate == b"HTTP/1.1 400 Bad Request"
    assert post(server, b"/api/threads/", b" " * TEN_MB, token).startswith(b"HTTP/1.1 413")
    # A form page past DATA_UPLOAD_MAX_MEMORY_SIZE: Django's own RequestDataTooBig.
    form = b"application/x-www-form-urlencoded"
    cookie = b"Cookie: csrftoken=" + b"a" * 32 + b"\r\n"  # so that CSRF reads the form
    too_big = post(
        server, b"/accounts/login/", b"x=" + b"x" * TEN_MB, content_type=form, extra=cookie
    )
    assert too_big == b"HTTP/1.1 400 Bad Request"
    asyncio.run(test_unknown_socket_paths_are_closed_4404_over_the_network(server, token))
    log = server.log_text()
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log and "Internal Server Error" not in log, log[-4000:]
    assert re.search(r"WARNING django\.security\.DisallowedHost", log), log[-4000:]
    assert re.search(r"WARNING django\.security\.RequestDataTooBig", log), log[-4000:]


# --- login throttling -------------------------------------------------------------------------


def login(client: Client, path: str, username: str, password: str, ip: str) -> Any:
    return client.post(
        path, {"username": username, "password": password}, REMOTE_ADDR=ip, follow=False
    )


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_failed_logins_are_throttled_by_username(db: Any, settings: Any, path: str) -> None:
    user = helpers.make_user("victim", password="right-Password-1")
    user.is_staff = True
    user.save()
    client = Client()
    for n in range(getattr(settings, "AXES_FAILURE_LIMIT", 5) - 1):
        response = login(client, path, "victim", f"wrong-{n}", ip=f"10.0.0.{n + 1}")
        assert response.status_code == 200, n  # the form again, with its error
    assert login(client, path, "victim", "wrong", ip="10.0.0.99").status_code == 429
    # From yet another address, even the right password is refused while locked out.
    locked = login(client, path, "victim", "right-Password-1", ip="10.0.1.1")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    assert int(locked.headers["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    # Other accounts are not locked by it.
    bystander = helpers.make_user("bystander", password="right-Password-1")
    bystander.is_staff = True  # so that the admin login takes it too
    bystander.save()
    assert login(client, path, "bystander", "right-Password-1", "10.0.2.1").status_code == 302


def test_failed_logins_are_throttled_by_client_address(db: Any, settings: Any) -> None:
    helpers.make_user("target", password="right-Password-1")
    client = Client()
    for n in range(getattr(settings, "AXES_FAILURE_LIMIT", 5)):
        login(client, "/accounts/login/", f"guess{n}", "nope", ip="192.0.2.7")
    locked = login(client, "/accounts/login/", "target", "right-Password-1", ip="192.0.2.7")
    assert locked.status_code == 429
    elsewhere = login(client, "/accounts/login/", "target", "right-Password-1", ip="192.0.2.8")
    assert elsewhere.status_code == 302


def test_the_lockout_message_is_marked_for_translation() -> None:
    from django.utils.functional import Promise

    from chat.views import LOCKOUT_MESSAGE

    assert isinstance(LOCKOUT_MESSAGE, Promise)  # gettext_lazy: translated when rendered


def test_json_clients_get_a_typed_lockout(db: Any, settings: Any) -> None:
    client = Client()
    for n in range(getattr(settings, "AXES_FAILURE_LIMIT", 5)):
        login(client, "/accounts/login/", "someone", f"x{n}", ip="198.51.100.1")
    response = client.post(
        "/accounts/login/",
        {"username": "someone", "password": "x"},
        REMOTE_ADDR="198.51.100.1",
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0


# --- /healthz/events when the database fails during authentication ------------------------


@pytest.mark.django_db(transaction=True)
async def test_event_check_is_503_when_authentication_hits_a_dead_database(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from chat import api

    settings.DEBUG = False

    def down(raw: str) -> Any:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(api, "principal_from_token", down)
    response = await AsyncClient().get(
        "/healthz/events", headers={"Authorization": "Bearer nt_whatever"}
    )
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail" and body["check"] == "database"
    assert "OperationalError" in body["detail"]
