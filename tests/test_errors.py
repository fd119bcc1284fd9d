"""The error vocabulary: one ErrorCode list, immutable errors, copies that name a ref."""

import ast
from pathlib import Path

import pytest

from chat.errors import ErrorCode, NetraError, run_not_active, unavailable

ROOT = Path(__file__).resolve().parent.parent
ERROR_TYPES = {"NetraError", "AgentFailure", "ToolError"}


def wire_codes_in_source() -> set[str]:
    """String codes the product's code hands to an error type or writes as `"code": ...`."""
    codes: set[str] = set()
    for package in ("chat", "agents"):
        for path in (ROOT / package).rglob("*.py"):
            # The examples are a team's code: its tools' own codes are not the product's.
            if "migrations" in path.parts or "examples" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and node.args:
                    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                    first = node.args[0]
                    if name in ERROR_TYPES and isinstance(first, ast.Constant):
                        codes.add(str(first.value))
                if isinstance(node, ast.Dict):
                    for key, value in zip(node.keys, node.values, strict=True):
                        if (
                            isinstance(key, ast.Constant)
                            and key.value == "code"
                            and isinstance(value, ast.Constant)
                            and isinstance(value.value, str)
                        ):
                            codes.add(value.value)
    return codes


def test_every_wire_code_of_the_source_is_an_error_code() -> None:
    codes = wire_codes_in_source()
    assert codes, "the scan found no codes: it no longer matches the source"
    assert codes - set(ErrorCode) == set()


def test_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="no_such_code"):
        NetraError("no_such_code", "typo")  # type: ignore[arg-type]


def test_errors_are_immutable() -> None:
    err = run_not_active()
    for field in ("code", "message", "status", "close_code", "retry_after", "ref"):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(err, field, None)
        with pytest.raises(AttributeError, match="immutable"):
            delattr(err, field)


def test_copies_change_one_field_and_leave_the_original() -> None:
    err = unavailable("down")
    named = err.with_ref("m-7")
    assert (named.ref, err.ref) == ("m-7", None)
    assert named.frame() == {
        "type": "error",
        "code": "unavailable",
        "message": "down",
        "close_code": 4503,
        "ref": "m-7",
    }
    kept_open = named.without_close()
    assert (kept_open.close_code, named.close_code) == (None, 4503)
    assert (kept_open.code, kept_open.status, kept_open.ref) == ("unavailable", 503, "m-7")


def _raise_chained() -> None:
    try:
        raise KeyError("inner")
    except KeyError as exc:
        raise unavailable().with_ref("r") from exc


def test_errors_still_chain_and_take_notes() -> None:
    with pytest.raises(NetraError) as caught:
        _raise_chained()
    caught.value.add_note("seen")
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.__notes__ == ["seen"]
