"""Writes of the chat layer: threads, users and tokens."""

import secrets
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from chat import metrics
from chat.auth import TOKEN_PREFIX, hash_token
from chat.broadcaster import session_group, token_group, user_sessions_group
from chat.errors import report_exception, thread_not_found, unknown_agent
from chat.models import ApiToken, Thread, default_agent
from chat.ports import configured_agents

MAX_TITLE = 200


def token_create(*, user: Any, name: str = "") -> tuple[ApiToken, str]:
    """Creates a token for `user`; returns the row and the raw token, which is never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:10], digest=hash_token(raw))
    return token, raw


def token_revoke(*, token: ApiToken) -> None:
    """Marks a token revoked and closes the sockets it opened, on every worker, with 4401."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    _tell_sockets(
        token_group(token.pk),
        "token.revoked",
        "could not close the sockets of a revoked token",
        token_prefix=token.prefix,
    )


def session_close_sockets(*, session_key: str) -> None:
    """Closes the sockets a browser session opened, on every worker, with 4401 (at its
    logout, before the session is flushed)."""
    _tell_sockets(
        session_group(session_key), "session.ended", "could not close the sockets of a session"
    )


def user_recheck_sessions(*, user_id: Any) -> None:
    """Makes every cookie socket of the user check its session again, on every worker: one
    whose session no longer authenticates (the password changed) closes with 4401, one of a
    deactivated user with 4403."""
    _tell_sockets(
        user_sessions_group(user_id),
        "session.check",
        "could not re-check the sessions of a user's sockets",
        user_id=user_id,
    )


def _tell_sockets(group: str, message_type: str, failure: str, **context: Any) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(group, {"type": message_type})
    except Exception as exc:  # noqa: BLE001 - reported; the credential is already gone, and
        # the sockets' next handshake is refused
        metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_send").inc()
        report_exception(exc, failure, **context)


def thread_create(*, owner: Any, title: str = "", agent: str | None = None) -> Thread:
    """Creates a thread for `owner`, answered by `agent` (default: NETRA_DEFAULT_AGENT);
    raises `unknown_agent` for a name that is not configured."""
    if agent is None:
        agent = default_agent()
    else:
        agents = configured_agents()
        if agent not in agents:
            raise unknown_agent(agent, agents)
    return Thread.objects.create(owner=owner, title=title.strip()[:MAX_TITLE], agent=agent)


def thread_rename(*, thread: Thread, title: str) -> Thread:
    """Gives `thread` a new title (stripped and cut to 200 characters; empty: the default)."""
    thread.title = title.strip()[:MAX_TITLE]
    thread.save(update_fields=["title"])
    return thread


def thread_get_or_create(*, thread_id: Any, owner: Any, title: str = "") -> Thread:
    """Returns `owner`'s thread `thread_id`, creating it under that id if no thread has it
    (an AG-UI client names its threads); raises thread_not_found for anyone else's."""
    thread, _ = Thread.objects.get_or_create(
        pk=thread_id, defaults={"owner": owner, "title": title.strip()[:MAX_TITLE]}
    )
    if thread.owner_id != owner.pk or thread.is_probe:
        raise thread_not_found()
    return thread
