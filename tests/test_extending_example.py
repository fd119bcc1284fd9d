"""The support agent of docs/extending.md (agents/examples/support.py), tested the way the
document tells a team to: with the testing kit, a scripted model and a loopback carrier."""

import importlib
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from channels.db import database_sync_to_async

from agents.testing import (
    ScriptedLLM,
    assert_run_invariants,
    run_agent,
    text_reply,
    tool_call_reply,
)
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]

EXAMPLE = "agents.examples.support"
PARCELS = {"NX1234": {"status": "in_transit", "location": "Leipzig hub", "eta": "2026-12-03"}}


@pytest.fixture
def carrier(settings: Any) -> Iterator[list[str]]:
    """The carrier's tracking service on a loopback port (SUPPORT_CARRIER_URL points at
    it); yields the paths it was asked for. /down/ answers 503."""
    asked: list[str] = []

    class Tracking(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            number = self.path.rsplit("/", 1)[-1]
            if number == "DOWN503":
                self.send_error(503)
                return
            parcel = PARCELS.get(number)
            if parcel is None:
                self.send_error(404)
                return
            body = json.dumps(parcel).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tracking)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    settings.SUPPORT_CARRIER_URL = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield asked
    server.shutdown()
    server.server_close()


@pytest.fixture
def support(registry: Any, agents: Any, scripted_llm: ScriptedLLM) -> ModuleType:
    """The example enabled as the settings would enable it (NETRA_TOOLS imports the module,
    NETRA_AGENTS names SupportAgent as `support`), its model the scripted one."""
    sys.modules.pop(EXAMPLE, None)  # imported afresh: its @tool functions register again
    registry.import_modules([EXAMPLE])
    assert registry.problems == []
    module = importlib.import_module(EXAMPLE)
    agents.register("support", module.SupportAgent(), path=f"{EXAMPLE}.SupportAgent")
    scripted_llm.point("support")
    return module


async def test_the_support_agent_answers_from_the_users_threads_and_the_carrier(
    user: Any,
    other_user: Any,
    support: ModuleType,
    scripted_llm: ScriptedLLM,
    carrier: list[str],
) -> None:
    await database_sync_to_async(helpers.make_thread)(user, "Refund for order 17")
    await database_sync_to_async(helpers.make_thread)(other_user, "Mallory's secret")
    scripted_llm.script(
        tool_call_reply("my_threads", ("shipping_status", {"tracking_number": "NX1234"})),
        text_reply("Your parcel NX1234 is at the Leipzig hub; it should arrive on 3 December."),
    )

    events = await run_agent("support", "Where is my parcel NX1234?", user=user)

    assert_run_invariants(events)
    assert [e["type"] for e in events] == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "tool_executing",
        "tool_completed",
        "agent_thinking",
        "partial_result",
        "agent_completed",
    ]
    assert events[0]["data"]["agent"] == "support"
    threads, parcel = [e["data"] for e in events if e["type"] == "tool_completed"]
    assert threads["status"] == "ok"
    titles = {t["title"] for t in threads["result"]}
    assert "Refund for order 17" in titles
    assert "Mallory's secret" not in titles, "a tool acts for the run's user only"
    assert parcel["result"] == {"tracking_number": "NX1234", **PARCELS["NX1234"]}
    assert carrier == ["/v1/parcels/NX1234"]
    assert events[-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["text"].startswith("Your parcel NX1234")

    first = scripted_llm.requests[0].body
    assert sorted(t["function"]["name"] for t in first["tools"]) == [
        "my_threads",
        "shipping_status",
    ], "the agent offers its own tools only"
    assert first["messages"][0] == {
        "role": "system",
        "content": support.SupportAgent.system_prompt,
    }
    assert first["temperature"] == 0.2


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("ZZ9999", "unknown_parcel"),
        ("DOWN503", "carrier_unavailable"),
        ("not a number", "bad_arguments"),
    ],
)
async def test_the_carrier_tools_failures_are_typed_and_the_model_is_told(
    support: ModuleType,
    scripted_llm: ScriptedLLM,
    carrier: list[str],
    number: str,
    code: str,
) -> None:
    scripted_llm.script(
        tool_call_reply(("shipping_status", {"tracking_number": number})),
        text_reply("I could not find that parcel."),
    )
    events = await run_agent("support", f"Where is {number}?")
    assert_run_invariants(events)
    (done,) = [e["data"] for e in events if e["type"] == "tool_completed"]
    assert (done["status"], done["error"]["code"]) == ("error", code)
    told = json.loads(scripted_llm.requests[1].body["messages"][-1]["content"])
    assert told["error"]["code"] == code
    assert events[-1]["data"]["status"] == "completed"


async def test_the_carrier_being_unreachable_is_carrier_unavailable(
    support: ModuleType, scripted_llm: ScriptedLLM, settings: Any
) -> None:
    settings.SUPPORT_CARRIER_URL = f"{scripted_llm.url}-closed".replace(str(scripted_llm.port), "9")
    scripted_llm.script(
        tool_call_reply(("shipping_status", {"tracking_number": "NX1234"})),
        text_reply("The carrier is down."),
    )
    events = await run_agent("support", "Where is NX1234?")
    assert_run_invariants(events)
    (done,) = [e["data"] for e in events if e["type"] == "tool_completed"]
    assert done["error"]["code"] == "carrier_unavailable"


def test_the_document_shows_the_example_as_it_is() -> None:
    root = Path(__file__).resolve().parent.parent
    document = (root / "docs" / "extending.md").read_text()
    shown = document.split("<!-- begin agents/examples/support.py -->\n```python\n")[1]
    shown = shown.split("```\n<!-- end agents/examples/support.py -->")[0]
    assert shown == (root / "agents" / "examples" / "support.py").read_text()
