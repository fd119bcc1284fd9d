"""Start-up: a misconfigured process refuses to start with a named error; a server process
freezes its start-up objects and reports a crash with its tracebacks."""

import signal
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


@pytest.mark.parametrize(("program", "server"), [("daphne", True), ("pytest", False)])
def test_a_server_process_freezes_its_start_up_and_reports_crashes(
    program: str, server: bool
) -> None:
    """In a server process a full garbage collection no longer walks the modules, settings
    and app made at start-up (netra_site.asgi.freeze_startup_objects), and a crash prints
    every thread's traceback (report_crashes)."""
    code = (
        f"import faulthandler, gc, sys; sys.argv = [{program!r}]; import netra_site.asgi; "
        "print(gc.get_freeze_count(), faulthandler.is_enabled())"
    )
    env = base_env(DATABASE_URL="sqlite:///:memory:")
    env.pop("PYTHONFAULTHANDLER", None)  # the process's own choice, not the caller's shell
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    frozen, reports = out.stdout.split()[-2:]
    assert (int(frozen) > 10_000) if server else (int(frozen) == 0), out.stderr[-2000:]
    assert reports == str(server)


def test_a_crashing_server_process_says_where() -> None:
    """A worker killed by a segmentation fault leaves its threads' tracebacks in its log."""
    code = "import ctypes, sys; sys.argv = ['daphne']; import netra_site.asgi; ctypes.string_at(0)"
    env = base_env(DATABASE_URL="sqlite:///:memory:")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in out.stderr
    assert 'File "<string>", line 1' in out.stderr
