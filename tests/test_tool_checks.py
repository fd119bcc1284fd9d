"""NETRA_TOOLS: every misconfigured tool module is a system check error naming its culprit,
refused by `manage.py check` and by the ASGI start-up."""

import subprocess

import pytest
from django.test import override_settings

from agents.checks import check_tools
from tests.servers import PYTHON, ROOT, Server, base_env

MISCONFIGURED = {
    "tests.toolmods.broken_import": [
        "tests.toolmods.broken_import: (netra.E120) The tool module "
        "'tests.toolmods.broken_import' does not import: ModuleNotFoundError: "
        "No module named 'netra_no_such_package'",
    ],
    "tests.toolmods.no_such_module": [
        "tests.toolmods.no_such_module: (netra.E120) The tool module "
        "'tests.toolmods.no_such_module' does not import: ModuleNotFoundError: "
        "No module named 'tests.toolmods.no_such_module'",
    ],
    "tests.toolmods.duplicate": [
        "tests.toolmods.duplicate.find_order: (netra.E121) Two tools are named "
        "'lookup_order': tests.toolmods.duplicate.lookup_order and "
        "tests.toolmods.duplicate.find_order.",
    ],
    "tests.toolmods.unannotated": [
        "tests.toolmods.unannotated.search: (netra.E122) The tool 'search' "
        "(tests.toolmods.unannotated.search) has no JSON schema: parameter 'query' has no "
        "type annotation.",
    ],
    "tests.toolmods.no_schema": [
        "tests.toolmods.no_schema.send_raw: (netra.E122) The tool 'send_raw' "
        "(tests.toolmods.no_schema.send_raw) has no JSON schema: parameter 'connection': "
        "Unable to generate pydantic-core schema for <class 'socket.socket'>.",
    ],
}


def manage_check(netra_tools: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", "check"],
        cwd=ROOT,
        env=base_env(NETRA_TOOLS=netra_tools),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if "(netra.E" in line]


@pytest.mark.parametrize("module", sorted(MISCONFIGURED))
def test_manage_check_refuses_each_misconfigured_tool_module(module: str) -> None:
    result = manage_check(module)
    assert result.returncode != 0
    assert check_errors(result.stderr) == MISCONFIGURED[module]


def test_manage_check_accepts_good_modules_from_a_comma_list() -> None:
    result = manage_check("tests.toolmods.good, agents.builtin_tools")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_one_bad_module_among_good_ones_is_named_alone() -> None:
    result = manage_check("tests.toolmods.good,tests.toolmods.duplicate")
    assert check_errors(result.stderr) == MISCONFIGURED["tests.toolmods.duplicate"]


def test_the_server_refuses_to_start_with_misconfigured_tools() -> None:
    server = Server(env={"NETRA_TOOLS": ",".join(sorted(MISCONFIGURED))})
    with pytest.raises(RuntimeError, match="daphne exited"):
        server.start(timeout=30)
    log = server.log_text()
    assert "System checks failed" in log
    for messages in MISCONFIGURED.values():
        for message in messages:
            assert message in log


def test_netra_tools_must_be_a_list() -> None:
    with override_settings(NETRA_TOOLS="myapp.tools"):
        messages = check_tools()
    assert [m.id for m in messages] == ["netra.E120"]
    assert "'myapp.tools'" in messages[0].msg
