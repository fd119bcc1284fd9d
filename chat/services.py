"""Writes of the chat layer: threads, users and tokens."""

import secrets
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from chat import metrics
from chat.auth import TOKEN_PREFIX, hash_token
from chat.broadcaster import token_group
from chat.errors import report_exception, thread_not_found
from chat.models import ApiToken, Thread

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
    try:
        async_to_sync(get_channel_layer().group_send)(
            token_group(token.pk), {"type": "token.revoked"}
        )
    except Exception as exc:  # noqa: BLE001 - the token is revoked; open sockets expire
        metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_send").inc()
        report_exception(
            exc, "could not close the sockets of a revoked token", token_prefix=token.prefix
        )


def thread_create(*, owner: Any, title: str = "") -> Thread:
    """Creates a thread for `owner`."""
    return Thread.objects.create(owner=owner, title=title.strip()[:MAX_TITLE])


def thread_get_or_create(*, thread_id: Any, owner: Any, title: str = "") -> Thread:
    """Returns `owner`'s thread `thread_id`, creating it under that id if no thread has it
    (an AG-UI client names its threads); raises thread_not_found for anyone else's."""
    thread, _ = Thread.objects.get_or_create(
        pk=thread_id, defaults={"owner": owner, "title": title.strip()[:MAX_TITLE]}
    )
    if thread.owner_id != owner.pk or thread.is_probe:
        raise thread_not_found()
    return thread
