"""NETRA_AGENTS and NETRA_DEFAULT_AGENT: every misconfiguration is a system check error
naming its culprit, refused by `manage.py check` and by the ASGI start-up (no fallback to
another agent); a good entry runs end to end over a real daphne socket."""

import subprocess
from typing import Any

import pytest
from django.test import override_settings

from agents.checks import check_agents
from agents.testing import assert_run_invariants
from tests.servers import PYTHON, ROOT, Server, Servers, base_env
from tests.sockets import Socket, completed_run

BROKEN = "tests.agentmods.broken"
ECHO = "tests.agentmods.good.EchoAgent"

# Environment -> the system check messages it must give, exactly.
MISCONFIGURED: dict[str, tuple[dict[str, str], list[str]]] = {
    "no_module": (
        {"NETRA_AGENTS": "bad=tests.agentmods.no_such_module.Agent"},
        [
            "NETRA_AGENTS['bad']: (netra.E130) The agent 'bad' names "
            "'tests.agentmods.no_such_module.Agent', which does not import: "
            "ModuleNotFoundError: No module named 'tests.agentmods.no_such_module'",
        ],
    ),
    "no_class": (
        {"NETRA_AGENTS": f"bad={BROKEN}.Missing"},
        [
            f"NETRA_AGENTS['bad']: (netra.E130) The agent 'bad' names '{BROKEN}.Missing', "
            f"which does not import: ImportError: module '{BROKEN}' has no attribute 'Missing'",
        ],
    ),
    "no_path": (
        {"NETRA_AGENTS": "bad"},
        ["NETRA_AGENTS['bad']: (netra.E130) The agent 'bad' has no class path."],
    ),
    "no_run": (
        {"NETRA_AGENTS": f"bad={BROKEN}.NoRun"},
        [
            f"NETRA_AGENTS['bad']: (netra.E131) {BROKEN}.NoRun is not an agent class: it has "
            "no 'async def run(self, run_input, emitter, tools)'.",
        ],
    ),
    "sync_run": (
        {"NETRA_AGENTS": f"bad={BROKEN}.SyncRun"},
        [
            f"NETRA_AGENTS['bad']: (netra.E131) {BROKEN}.SyncRun is not an agent class: it "
            "has no 'async def run(self, run_input, emitter, tools)'.",
        ],
    ),
    "not_a_class": (
        {"NETRA_AGENTS": f"bad={BROKEN}.not_a_class"},
        [
            f"NETRA_AGENTS['bad']: (netra.E131) {BROKEN}.not_a_class is not an agent class: "
            "it is a str, not a class.",
        ],
    ),
    "needs_arguments": (
        {"NETRA_AGENTS": f"bad={BROKEN}.NeedsArguments"},
        [
            f"NETRA_AGENTS['bad']: (netra.E132) The agent 'bad' ({BROKEN}.NeedsArguments) "
            "could not be built with no arguments: TypeError: NeedsArguments.__init__() "
            "missing 1 required positional argument: 'api_key'",
        ],
    ),
    "unknown_tool": (
        {"NETRA_AGENTS": f"bad={BROKEN}.UnknownTool"},
        [
            "NETRA_AGENTS['bad']: (netra.E133) The agent 'bad' may call 'teleport', which no "
            "registered tool is named.",
        ],
    ),
    "default_not_configured": (
        {"NETRA_DEFAULT_AGENT": "support"},
        [
            "NETRA_DEFAULT_AGENT: (netra.E134) NETRA_DEFAULT_AGENT is 'support'; no agent of "
            "that name is configured (configured: builtin).",
        ],
    ),
    "unknown_provider": (
        {"AGENT_PROVIDER": "gpt"},
        ["?: (netra.E101) AGENT_PROVIDER is 'gpt'; it must be one of builtin, openai."],
    ),
    "llm_agent_without_a_model": (
        {"NETRA_AGENTS": "support=agents.examples.support.SupportAgent"},
        [
            "NETRA_AGENTS['support']: (netra.E102) AGENT_MODEL is not set; an "
            "OpenAI-compatible agent needs a model.",
            "NETRA_AGENTS['support']: (netra.E104) OPENAI_BASE_URL is api.openai.com but "
            "OPENAI_API_KEY is not set.",
        ],
    ),
}


def manage_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", "check"],
        cwd=ROOT,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if "(netra.E" in line]


@pytest.mark.parametrize("case", sorted(MISCONFIGURED))
def test_manage_check_refuses_each_misconfigured_agent(case: str) -> None:
    env, messages = MISCONFIGURED[case]
    result = manage_check(env)
    assert result.returncode != 0
    assert check_errors(result.stderr) == messages


def test_manage_check_accepts_good_entries_and_a_default_among_them() -> None:
    result = manage_check(
        {
            "NETRA_AGENTS": f"echo={ECHO}, calc={ECHO}",
            "NETRA_DEFAULT_AGENT": "echo",
        }
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_an_unknown_agent_provider_no_longer_falls_back_to_builtin() -> None:
    server = Server(env={"AGENT_PROVIDER": "gpt"})
    with pytest.raises(RuntimeError, match="daphne exited"):
        server.start(timeout=30)
    assert "AGENT_PROVIDER is 'gpt'" in server.log_text()


def test_the_server_refuses_to_start_with_misconfigured_agents() -> None:
    entries = ",".join(
        env["NETRA_AGENTS"]
        for env, _ in MISCONFIGURED.values()
        if "NETRA_AGENTS" in env and not env["NETRA_AGENTS"].startswith("support=")
    ).replace("bad=", "")
    # One entry each, named after its class, plus a default that is none of them.
    named = ",".join(f"{path.rsplit('.', 1)[-1].lower()}={path}" for path in entries.split(","))
    server = Server(env={"NETRA_AGENTS": named, "NETRA_DEFAULT_AGENT": "support"})
    with pytest.raises(RuntimeError, match="daphne exited"):
        server.start(timeout=30)
    log = server.log_text()
    assert "System checks failed" in log
    for code in ("E130", "E131", "E132", "E133", "E134"):
        assert f"(netra.{code})" in log, code
    assert "NETRA_AGENTS['needsarguments']" in log and "NETRA_DEFAULT_AGENT" in log


def test_netra_agents_must_be_a_mapping() -> None:
    with override_settings(NETRA_AGENTS="echo=tests.agentmods.good.EchoAgent"):
        messages = check_agents()
    assert [m.id for m in messages] == ["netra.E135"]


async def test_an_agent_from_netra_agents_runs_over_a_real_daphne_socket(
    servers: Servers,
) -> None:
    server = servers.start(
        env={
            "NETRA_AGENTS": "echo=tests.agentmods.good.EchoAgent",
            "NETRA_DEFAULT_AGENT": "echo",
        }
    )
    token = server.make_user("echo-user")
    status, listing = server.api("GET", "/api/agents/", token)
    assert status == 200
    assert [a["name"] for a in listing["agents"]] == ["builtin", "echo"]
    status, created = server.api("POST", "/api/threads/", token, {"title": "sums"})
    assert (status, created["agent"]) == (201, "echo"), "the default agent"
    status, refused = server.api("POST", "/api/threads/", token, {"agent": "nobody"})
    assert (status, refused["error"]["code"]) == (400, "unknown_agent")

    socket = Socket(server, created["id"], token=token)
    assert (await socket.open())["type"] == "connection_established"
    ack = await socket.ask("6*7")
    await socket.wait_for(completed_run(ack["run_id"]), timeout=30)
    await socket.close()
    events: list[dict[str, Any]] = socket.events
    assert_run_invariants(events)
    assert events[0]["data"]["agent"] == "echo"
    assert [e["type"] for e in events] == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "partial_result",
        "agent_completed",
    ]
    assert events[-1]["data"]["text"] == "It is 42."
