"""Isolation and security: many users at once never see each other's data; CSRF on every
session POST; tokens and passwords never logged; check --deploy clean; CSP everywhere."""

import asyncio
import json
import os
import re
import subprocess
import uuid
from typing import Any

import pytest
import websockets
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from agents.invariants import by_run, run_violations
from tests import helpers
from tests.servers import PYTHON, ROOT, Server, Servers, base_env

USERS = 50
RUNS_PER_USER = 5
PASSWORD = "pw-Secret-123"


SERVER_ENV = {"AGENT_STREAM_DELAY": "0"}


async def user_session(server: Server, token: str, index: int) -> dict[str, Any]:
    """One user: 5 threads, a socket on each, one run on each, all at once."""
    headers = {"Authorization": f"Bearer {token}"}
    threads = []
    for n in range(RUNS_PER_USER):
        status, body = await asyncio.to_thread(
            server.api, "POST", "/api/threads/", token, {"title": f"u{index}-t{n}"}
        )
        assert status == 201, body
        threads.append(body["id"])

    async def one(thread_id: str, n: int) -> list[dict[str, Any]]:
        async with websockets.connect(
            f"{server.ws}/ws/chat/{thread_id}/", additional_headers=headers
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "connection_established"
            secret = f"what is {index}*1000+{n} for user{index}"
            await ws.send(
                json.dumps({"type": "user_message", "text": secret, "client_msg_id": f"m{n}"})
            )
            frames = []
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                frames.append(frame)
                if frame["type"] == "agent_completed":
                    return frames

    results = await asyncio.gather(*(one(t, n) for n, t in enumerate(threads)))
    return {"threads": threads, "frames": results}


def make_users(server: Server, count: int) -> list[str]:
    return server.make_users([f"iso{i}" for i in range(count)], PASSWORD)


async def test_fifty_users_with_five_runs_each_stay_apart(server: Server) -> None:
    tokens = await asyncio.to_thread(make_users, server, USERS)
    sessions = await asyncio.gather(
        *(user_session(server, token, i) for i, token in enumerate(tokens))
    )
    events_seen = 0
    for i, session in enumerate(sessions):
        own = set(session["threads"])
        for n, frames in enumerate(session["frames"]):
            events = [f for f in frames if "seq" in f]
            events_seen += len(events)
            assert {e["thread_id"] for e in events} == {session["threads"][n]}
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert all(run_violations(run) == [] for run in by_run(events).values())
            assert str(i * 1000 + n) in events[-1]["data"]["text"]
        # Every other user's thread and run is invisible to this user, over HTTP and sockets.
        other = sessions[(i + 1) % USERS]
        foreign_thread = other["threads"][0]
        foreign_run = next(f for f in other["frames"][0] if f["type"] == "ack")["run_id"]
        token = tokens[i]
        assert foreign_thread not in own
        for method, path in [
            ("GET", f"/api/threads/{foreign_thread}/events/"),
            ("POST", f"/api/threads/{foreign_thread}/messages/"),
            ("POST", f"/api/runs/{foreign_run}/cancel/"),
        ]:
            status, body = await asyncio.to_thread(
                server.api, method, path, token, {"text": "x", "client_msg_id": "x"}
            )
            assert status == 404, (path, body)
        status, listing = await asyncio.to_thread(server.api, "GET", "/api/threads/", token)
        assert {t["id"] for t in listing["threads"]} == own
    assert events_seen >= USERS * RUNS_PER_USER * 6
    async with websockets.connect(
        f"{server.ws}/ws/chat/{sessions[1]['threads'][0]}/",
        additional_headers={"Authorization": f"Bearer {tokens[0]}"},
    ) as ws:
        frame = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert (frame["code"], ws.close_code) == ("thread_not_found", 4404)
    # No token and no password in any log line of the server.
    log = server.log_text()
    assert PASSWORD not in log
    for token in tokens:
        assert token not in log and token[10:] not in log


# --- CSRF on every session-authenticated POST ------------------------------------------------


def post_routes() -> list[str]:
    """Every URL of the site that takes a POST, with sample ids filled in."""
    found: list[str] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                found.append(prefix + str(entry.pattern))

    walk(get_resolver().url_patterns, "/")
    sample = str(uuid.uuid4())
    paths = [re.sub(r"<[^>]+>", sample, p) for p in found]
    return [p for p in paths if p.startswith(("/api/", "/threads/", "/accounts/", "/admin/ops"))]


@pytest.mark.django_db(transaction=True)
def test_every_session_post_requires_csrf() -> None:
    user = helpers.make_user("csrf-victim")
    user.is_staff = True
    user.save()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    routes = post_routes()
    assert "/api/threads/" in routes and "/accounts/logout/" in routes
    for path in routes:
        response = client.post(path, data="{}", content_type="application/json")
        if response.status_code == 405:
            continue  # the route takes no POST at all
        assert response.status_code == 403, (path, response.status_code)


# --- deployment settings and headers -----------------------------------------------------------


def test_check_deploy_is_clean_with_https() -> None:
    env = base_env(
        DEBUG="0",
        HTTPS="1",
        SECRET_KEY=os.urandom(32).hex() + "Xy!_long-enough-secret-key",
        ALLOWED_HOSTS="chat.example.com",
        DATABASE_URL="sqlite:////tmp/netra-deploy-check.db",
    )
    result = subprocess.run(
        [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_off_refuses_to_start_without_a_secret_key(servers: Servers) -> None:
    server = servers.make()
    server.env.pop("SECRET_KEY")
    with pytest.raises(RuntimeError, match="daphne exited"):
        server.start(timeout=30)
    assert "SECRET_KEY must be set when DEBUG is off" in server.log_text()


@pytest.mark.django_db(transaction=True)
def test_every_page_has_a_csp_and_no_inline_script() -> None:
    user = helpers.make_user("csp-viewer")
    user.is_staff = True
    user.is_superuser = True
    user.save()
    thread = helpers.make_thread(user)
    anonymous = Client()
    client = Client()
    client.force_login(user)
    pages = [
        (anonymous, "/accounts/login/"),
        (anonymous, "/accounts/signup/"),
        (client, "/threads/"),
        (client, f"/threads/{thread.id}/"),
        (client, f"/threads/{uuid.uuid4()}/"),
        (client, "/admin/"),
        (client, "/admin/ops/"),
        (client, "/admin/chat/connection/"),
        (anonymous, "/healthz"),
        (client, "/api/threads/"),
    ]
    for who, path in pages:
        response = who.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        policy = response.headers.get("Content-Security-Policy", "")
        assert (
            "script-src 'self'" in policy
            and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        ), (path, policy)
        html = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\son[a-z]+\s*=", html), path
