"""Sockets end with the credential that opened them: the hooks on Django's logout and on
saves of a user that change the password or the active flag (chat/services.py closes)."""

from typing import Any

from django.contrib.auth import get_user_model, user_logged_out
from django.db import transaction
from django.db.models.signals import post_save, pre_save

from chat import services

# Set on a user instance by pre_save when the save changes what authenticates a session.
_AUTH_CHANGED = "_netra_auth_changed"
_AUTH_FIELDS = ("password", "is_active")


def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Closes the sockets of the session that logs out (the site's and the admin's logout
    both send user_logged_out, before they flush the session)."""
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if session_key:
        services.session_close_sockets(session_key=session_key)


def note_auth_change(sender: Any, instance: Any, update_fields: Any, **kwargs: Any) -> None:
    """Notes whether this save changes the user's password or active flag: whatever set
    them (set_password, the admin, `changepassword`, a data migration), the stored row is
    compared, one query per save that may touch them."""
    if instance.pk is None or (
        update_fields is not None and not set(_AUTH_FIELDS) & set(update_fields)
    ):
        setattr(instance, _AUTH_CHANGED, False)
        return
    stored = sender._default_manager.filter(pk=instance.pk).values_list(*_AUTH_FIELDS).first()
    current = tuple(getattr(instance, name) for name in _AUTH_FIELDS)
    setattr(instance, _AUTH_CHANGED, stored is not None and tuple(stored) != current)


def recheck_after_auth_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """Once the change is committed, makes the user's cookie sockets check their session."""
    if getattr(instance, _AUTH_CHANGED, False):
        setattr(instance, _AUTH_CHANGED, False)
        user_id = instance.pk
        transaction.on_commit(lambda: services.user_recheck_sessions(user_id=user_id))


def connect() -> None:
    """Connects the hooks (from the app's ready())."""
    user_model = get_user_model()
    user_logged_out.connect(on_logout, dispatch_uid="netra-socket-logout")
    pre_save.connect(note_auth_change, sender=user_model, dispatch_uid="netra-socket-auth-pre")
    post_save.connect(
        recheck_after_auth_change, sender=user_model, dispatch_uid="netra-socket-auth-post"
    )
