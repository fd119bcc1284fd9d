"""The support agent of docs/extending.md: an LLM agent with two tools of its own.

- `my_threads` reads the signed-in user's own data through the ORM (their conversations;
  a team's would be orders or tickets): it filters by `ctx.user_id`, so it can never
  show anyone else's.
- `shipping_status` calls an outside HTTP service (a carrier's tracking API at
  SUPPORT_CARRIER_URL) and turns its failures into typed tool errors.
- `SupportAgent` is the OpenAI-compatible agent with its own prompt, tools and
  temperature; the model and server come from the settings (AGENT_MODEL, OPENAI_*).

Enable it with NETRA_TOOLS=agents.examples.support and
NETRA_AGENTS=support=agents.examples.support.SupportAgent. tests/test_extending_example.py
runs it with the testing kit.
"""

import json
import urllib.error
import urllib.request
from typing import Annotated, Any

from django.conf import settings
from pydantic import Field

from agents.errors import ToolError
from agents.providers.openai_compat import OpenAICompatAgent
from agents.tools import ToolContext, tool
from chat.models import Thread

DEFAULT_CARRIER_URL = "https://tracking.carrier.example/v1"


@tool
def my_threads(
    ctx: ToolContext, limit: Annotated[int, Field(ge=1, le=20, description="How many")] = 5
) -> list[dict[str, Any]]:
    """Lists the signed-in user's most recent conversations: title, agent, last activity.

    Sync, so it runs in a worker thread where the ORM works."""
    threads = Thread.objects.filter(owner_id=ctx.user_id, is_probe=False).order_by(
        "-last_activity"
    )[:limit]
    return [
        {
            "id": str(thread.id),
            "title": thread.title,
            "agent": thread.agent,
            "last_activity": thread.last_activity.isoformat(),
        }
        for thread in threads
    ]


@tool(timeout=5, idempotent=True)
def shipping_status(
    tracking_number: Annotated[str, Field(pattern=r"^[A-Z0-9]{4,20}$")],
) -> dict[str, Any]:
    """Asks the carrier where a parcel is, by its tracking number.

    Sync (the standard library's HTTP client), so it runs in a worker thread; the tool's
    timeout bounds the call as a whole, the client's the connection."""
    base = getattr(settings, "SUPPORT_CARRIER_URL", DEFAULT_CARRIER_URL)
    url = f"{base}/parcels/{tracking_number}"
    # The base URL is the settings' (http or https), the number matches its pattern.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=4.0) as response:  # noqa: S310
            parcel = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ToolError(
                "unknown_parcel", f"The carrier knows no parcel {tracking_number}."
            ) from exc
        raise ToolError(
            "carrier_unavailable", f"The carrier's service answered HTTP {exc.code}."
        ) from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise ToolError("carrier_unavailable", "The carrier's service cannot be reached.") from exc
    return {
        "tracking_number": tracking_number,
        "status": parcel.get("status", "unknown"),
        "location": parcel.get("location", ""),
        "eta": parcel.get("eta"),
    }


class SupportAgent(OpenAICompatAgent):
    """Answers a customer's questions about their conversations and their parcels."""

    description = "Support: your recent conversations and where your parcels are."
    system_prompt = (
        "You are the support assistant of Example Parcels. Use my_threads to see the "
        "customer's recent conversations and shipping_status to track a parcel; never "
        "guess a parcel's status."
    )
    tools = ["my_threads", "shipping_status"]
    temperature = 0.2
