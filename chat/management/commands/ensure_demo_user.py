"""`manage.py ensure_demo_user`: makes the local demo login and prints how to use it."""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Creates (or resets) the demo user for local development and prints the login."

    def handle(self, *args: Any, **options: Any) -> None:
        """Creates the user `demo` with the password from DEMO_PASSWORD (default netra-demo)."""
        username = os.environ.get("DEMO_USER", "demo")
        password = os.environ.get("DEMO_PASSWORD", "netra-demo")
        user_model = get_user_model()
        user, _ = user_model._default_manager.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = True
        user.is_superuser = True
        user.save()
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        self.stdout.write(
            f"\n  netra-chat is starting on http://{host}:{port}/\n"
            f"  Log in as '{username}' with password '{password}' (also admin at /admin/).\n"
            f"  API token: .venv/bin/python manage.py create_api_token {username}\n"
        )
