"""ASGI entry point: HTTP through Django, WebSockets through the chat routing."""

import asyncio
import faulthandler
import gc
import os
import sys
from pathlib import Path
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netra_site.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.core import checks  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

if not settings.DEBUG and not os.environ.get("SECRET_KEY"):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set when DEBUG is off (set DEBUG=1 for local development)."
    )

# ASGI servers run no system checks; a misconfigured process must not start half-working.
_problems = [message for message in checks.run_checks() if message.is_serious()]
if _problems:
    raise ImproperlyConfigured(
        "System checks failed:\n" + "\n".join(str(message) for message in _problems)
    )

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousFileOperation  # noqa: E402
from django.http import FileResponse, Http404, HttpRequest, HttpResponse  # noqa: E402

from agents import drain  # noqa: E402
from chat.ports import agent_service  # noqa: E402
from chat.routing import websocket_application  # noqa: E402
from netra_site import autobahn_timers  # noqa: E402


class StaticFiles(ASGIStaticFilesHandler):
    """Serves /static/; a path that leaves the static folders ('..' in any spelling) is a
    404, not the 500 of Django's handler, which lets SuspiciousFileOperation escape."""

    def serve(self, request: HttpRequest) -> HttpResponse | FileResponse:
        """Serves the file, or raises Http404 (logged as a client error)."""
        try:
            response = super().serve(request)
        except SuspiciousFileOperation as exc:
            raise Http404("No such static file.") from exc
        return response


SERVERS = ("daphne", "uvicorn")


def server_program() -> str | None:
    """ "daphne" or "uvicorn" in such a server's process; None elsewhere (a test process
    that imports the app, a management command)."""
    program = Path(sys.argv[0] if sys.argv else "")
    name = program.parent.name if program.name == "__main__.py" else program.name
    return name if name in SERVERS else None


def served_by_a_server() -> bool:
    """True in a daphne or uvicorn process (not in a test process that imports the app)."""
    return server_program() is not None


def start_process() -> None:
    """On the server's running event loop: starts the background loops (unless
    BACKGROUND_TASKS is off) and, in a server process, installs the drain on SIGTERM and
    SIGINT (agents/drain.py)."""
    service = agent_service()
    if service is None:
        return
    service.ensure_background()
    if settings.BACKGROUND_TASKS and served_by_a_server():
        drain.install(service)


def schedule_start() -> None:
    """Runs start_process as soon as the server's loop runs, without waiting for a request:
    a restarted process continues released runs at once. uvicorn imports the application
    on its running loop, after installing its signal handlers; daphne imports it before
    Twisted's reactor runs and installs its handlers, so there it waits for the reactor."""
    if not served_by_a_server():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        loop.call_soon(start_process)
    elif "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        reactor.callWhenRunning(reactor.callLater, 0, start_process)


class StartBackgroundTasks:
    """Makes sure the process is started (start_process) with any request too: the one
    path every server goes through, whatever happened at import."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        """Ensures the loops run, then hands the connection on."""
        if scope["type"] in ("http", "websocket"):
            start_process()
        return await self.app(scope, receive, send)


application = StartBackgroundTasks(
    ProtocolTypeRouter(
        {
            # Static files in-process and async, so no sync-only middleware sits on the
            # request path of every view.
            "http": StaticFiles(django_asgi_app),
            "websocket": websocket_application,
        }
    )
)


def report_crashes() -> None:
    """In a server process, a fatal signal (a segmentation fault in an extension, an abort)
    prints every thread's Python traceback to stderr before the process dies, so that the
    server's log says where a worker crashed (faulthandler)."""
    if served_by_a_server() and not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)


def fix_daphne_timeouts() -> None:
    """In a daphne process, WebSocket timeouts wait at least as long as they are set to
    (netra_site/autobahn_timers.py): otherwise a close can reach the client as 1006."""
    if server_program() == "daphne":
        autobahn_timers.install()


def freeze_startup_objects() -> None:
    """In a server process, moves everything allocated while starting (modules, settings,
    URL patterns, the app) to the collector's permanent generation: they live as long as
    the process, and a full collection no longer walks them. Measured in a daphne worker
    here (docs/benchmarks.md, round 6): full collections of 13-285 ms, one during a
    workload, each holding up every socket; at most 2.5 ms once frozen."""
    if not served_by_a_server():
        return
    gc.collect()
    gc.freeze()


report_crashes()
fix_daphne_timeouts()
schedule_start()
freeze_startup_objects()
