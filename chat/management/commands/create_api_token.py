"""`manage.py create_api_token <username>`: prints a new token, alone on its last line."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.services import token_create


class Command(BaseCommand):
    help = "Creates an API token for a user and prints it once (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Takes the username and an optional token name."""
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to recognise the token by.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Creates the token and prints it."""
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(options["username"])
        except user_model.DoesNotExist as exc:
            raise CommandError(f"No user named {options['username']!r}.") from exc
        token, raw = token_create(user=user, name=options["name"])
        self.stderr.write(f"Token {token.prefix}… for {user}: shown once, store it now.")
        self.stdout.write(raw)
