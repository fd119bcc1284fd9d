"""Units of the OpenAI-compatible agent: delta coalescing, retry delays, the conversation
sent, URL validation and the provider's system check."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from agents.checks import check_llm_provider
from agents.providers.openai_compat import (
    DeltaCoalescer,
    ProviderConfig,
    build_messages,
    retry_delay,
    url_problem,
)
from agents.testing import (
    API_KEY,
)

# --- units: coalescing, retry delays, conversation, configuration ------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_coalescer_emits_by_size_or_interval() -> None:
    clock = FakeClock()
    sent: list[str] = []

    async def emit(text: str) -> None:
        sent.append(text)

    coalescer = DeltaCoalescer(emit, max_chars=10, interval=0.05, clock=clock)
    await coalescer.add("a")
    assert sent == ["a"], "the first delta goes out at once"
    await coalescer.add("bc")
    await coalescer.add("de")
    assert sent == ["a"] and coalescer.due_in() == pytest.approx(0.05)
    clock.now += 0.05
    await coalescer.add("f")
    assert sent == ["a", "bcdef"], "a piece is due after the interval"
    await coalescer.add("0123456789")
    assert sent[-1] == "0123456789", "enough characters go out at once"
    await coalescer.add("tail")
    await coalescer.flush()
    assert "".join(sent) == "abcdef0123456789tail" and coalescer.due_in() is None


def test_retry_delay_honours_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert retry_delay({"retry-after": "2"}, attempt=0, base=1, max_wait=10) == 2
    assert retry_delay({"retry-after-ms": "250"}, attempt=0, base=1, max_wait=10) == 0.25
    date = format_datetime(now + timedelta(seconds=4), usegmt=True)
    assert retry_delay({"retry-after": date}, attempt=0, base=1, max_wait=10, now=now) == 4
    assert retry_delay({"retry-after": "60"}, attempt=0, base=1, max_wait=10) is None
    backoff = retry_delay({}, attempt=3, base=1, max_wait=5)
    assert backoff is not None and 2.5 <= backoff <= 5


def test_conversation_is_bounded_and_alternates() -> None:
    history = [
        {"role": "user", "text": "old question " * 50},
        {"role": "assistant", "text": "old answer"},
        {"role": "user", "text": "unanswered"},
        {"role": "assistant", "text": ""},
    ]
    messages = build_messages(system_prompt="sys", history=history, text="now", budget=100)
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "unanswered\n\nnow"},
    ]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.openai.com/v1", True),
        ("http://127.0.0.1:11434/v1", True),
        ("localhost:8080/v1", False),
        ("http://", False),
        ("http://host:99999/v1", False),
        ("ftp://host/v1", False),
    ],
)
def test_base_url_validation(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


def test_system_check_reports_misconfiguration(settings: Any) -> None:
    settings.AGENT_PROVIDER = "openai"
    settings.AGENT_MODEL = ""
    settings.OPENAI_BASE_URL = "not a url"
    assert {m.id for m in check_llm_provider()} == {"netra.E102", "netra.E103"}
    settings.AGENT_MODEL = "m"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:8080/v1"
    assert check_llm_provider() == []
    settings.AGENT_TOOL_CHOICE = "sometimes"
    settings.AGENT_CONTEXT_TOKENS = 100
    messages = check_llm_provider()
    assert {m.id for m in messages} == {"netra.E105", "netra.E106"}
    assert any("sometimes" in m.msg for m in messages)
    assert any("AGENT_CONTEXT_TOKENS" in m.msg for m in messages)
    for choice in ("required", "calculator"):
        settings.AGENT_TOOL_CHOICE = choice
        settings.AGENT_CONTEXT_TOKENS = 4096
        assert check_llm_provider() == []
    settings.AGENT_MAX_OUTPUT_TOKENS = 4096
    assert [m.id for m in check_llm_provider()] == ["netra.E105"]
    settings.AGENT_MAX_OUTPUT_TOKENS = 256
    assert check_llm_provider() == []
    settings.AGENT_PROVIDER = "gpt"
    assert [m.id for m in check_llm_provider()] == ["netra.E101"]


def test_api_key_is_not_in_the_config_repr() -> None:
    assert API_KEY not in repr(ProviderConfig(base_url="http://x/v1", model="m", api_key=API_KEY))
