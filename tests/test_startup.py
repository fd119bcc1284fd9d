"""Start-up: a misconfigured process refuses to start with a named error."""

import subprocess
import sys

import pytest
from django.test import override_settings

from chat.checks import check_channel_layer
from tests.servers import Servers, base_env


@pytest.mark.parametrize(
    ("layers", "error_id"),
    [
        ({}, "netra.E001"),
        ({"default": {"BACKEND": "no.such.Layer"}}, "netra.E002"),
        (
            {
                "default": {
                    "BACKEND": "channels.layers.InMemoryChannelLayer",
                    "CONFIG": {"no_such_option": 1},
                }
            },
            "netra.E002",
        ),
        (
            {
                "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
                "events": {"BACKEND": "no.such.PubSubLayer"},
            },
            "netra.E002",
        ),
    ],
)
def test_missing_or_unusable_channel_layer_is_a_check_error(
    layers: dict[str, object], error_id: str
) -> None:
    with override_settings(CHANNEL_LAYERS=layers):
        messages = check_channel_layer()
    assert [m.id for m in messages] == [error_id]
    assert messages[0].is_serious()


def test_the_server_refuses_to_start_with_a_failing_check(servers: Servers) -> None:
    server = servers.make(env={"AGENT_PROVIDER": "no-such-provider"})
    with pytest.raises(RuntimeError, match="daphne exited"):
        server.start(timeout=30)
    assert "System checks failed" in server.log_text()
    assert "no-such-provider" in server.log_text()


@pytest.mark.parametrize(("program", "frozen"), [("daphne", True), ("pytest", False)])
def test_a_server_process_freezes_what_it_allocated_while_starting(
    program: str, frozen: bool
) -> None:
    """A full garbage collection in a server process no longer walks the modules, settings
    and app made at start-up (netra_site.asgi.freeze_startup_objects)."""
    code = (
        f"import gc, sys; sys.argv = [{program!r}]; import netra_site.asgi; "
        "print(gc.get_freeze_count())"
    )
    env = base_env(DATABASE_URL="sqlite:///:memory:")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    count = int(out.stdout.split()[-1])
    assert (count > 10_000) if frozen else (count == 0), out.stderr[-2000:]
