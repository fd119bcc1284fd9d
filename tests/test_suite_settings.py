"""The suite runs against what it says, whatever the caller's shell exports: SQLite, the
in-memory channel layer and the built-in agent in process; subprocess servers get a
service or a model only when a test passes it."""

import json
import os
import subprocess

import pytest

from tests.servers import PYTHON, ROOT, base_env

# What `make run-cluster` or the README's model example leaves exported in a shell.
STRAY = {
    "DATABASE_URL": "postgres://nobody@127.0.0.1:1/not-the-test-db",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "AGENT_PROVIDER": "openai",
    "AGENT_MODEL": "qwen2.5:7b",
    "OPENAI_BASE_URL": "http://127.0.0.1:1/v1",
    "OPENAI_API_KEY": "sk-stray-0123456789abcdefghij",
    "SENTRY_DSN": "https://public@127.0.0.1:1/1",
}

READ_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "agent": settings.AGENT_PROVIDER,
    "model": settings.AGENT_MODEL,
    "openai": settings.OPENAI_BASE_URL,
    "sentry": settings.SENTRY_DSN,
}))
"""


def test_test_settings_ignore_services_and_models_the_caller_exported() -> None:
    env = {**os.environ, **STRAY, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [PYTHON, "-c", READ_SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "engine": "django.db.backends.sqlite3",
        "layer": "chat.layers.LocalChannelLayer",
        "agent": "builtin",
        "model": "",
        "openai": "https://api.openai.com/v1",
        "sentry": "",
    }


def test_server_environment_gets_a_service_only_when_the_test_passes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in STRAY.items():
        monkeypatch.setenv(name, value)
    assert not set(STRAY) & set(base_env())
    asked = base_env(REDIS_URL="redis://127.0.0.1:6379/0", AGENT_PROVIDER="openai")
    assert (asked["REDIS_URL"], asked["AGENT_PROVIDER"]) == ("redis://127.0.0.1:6379/0", "openai")
    assert "OPENAI_API_KEY" not in asked
