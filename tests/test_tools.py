"""@tool: names, descriptions, options, and JSON-schema parameters derived with pydantic."""

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from agents import tools
from agents.errors import ToolDefinitionError
from agents.tools import REGISTRY, ToolContext, build_tool, tool


class Address(BaseModel):
    street: str
    city: str = Field(description="The city name.")
    postcode: str | None = None


class Item(BaseModel):
    sku: Annotated[str, Field(min_length=3)]
    quantity: int = 1


def parameters(func: Any) -> dict[str, Any]:
    return build_tool(func).parameters


def test_plain_parameters_and_defaults() -> None:
    def search(query: str, limit: int = 10, exact: bool = False, score: float = 0.5) -> list[Any]:
        return []

    assert parameters(search) == {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer", "default": 10},
            "exact": {"type": "boolean", "default": False},
            "score": {"type": "number", "default": 0.5},
        },
        "required": ["query"],
        "additionalProperties": False,
    }


def test_literal_is_an_enum() -> None:
    def set_status(status: Literal["open", "closed"], priority: Literal[1, 2, 3] = 2) -> None:
        pass

    props = parameters(set_status)["properties"]
    assert props["status"] == {"type": "string", "enum": ["open", "closed"]}
    assert props["priority"] == {"type": "integer", "enum": [1, 2, 3], "default": 2}


def test_annotated_field_constraints_and_descriptions() -> None:
    def page(
        number: Annotated[int, Field(ge=1, le=100, description="Page number, from 1.")],
        tag: Annotated[str, Field(max_length=20, pattern=r"^[a-z]+$")] = "all",
    ) -> None:
        pass

    schema = parameters(page)
    assert schema["properties"]["number"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "Page number, from 1.",
    }
    assert schema["properties"]["tag"] == {
        "type": "string",
        "maxLength": 20,
        "pattern": "^[a-z]+$",
        "default": "all",
    }
    assert schema["required"] == ["number"]


def test_nested_models_are_inlined() -> None:
    def ship(address: Address, items: list[Item]) -> None:
        pass

    schema = parameters(ship)
    assert "$defs" not in schema and "$ref" not in json.dumps(schema)
    assert schema["properties"]["address"] == {
        "type": "object",
        "properties": {
            "street": {"type": "string"},
            "city": {"type": "string", "description": "The city name."},
            "postcode": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["street", "city"],
    }
    assert schema["properties"]["items"]["type"] == "array"
    assert schema["properties"]["items"]["items"]["properties"]["sku"] == {
        "type": "string",
        "minLength": 3,
    }


def test_optional_parameters() -> None:
    def note(text: str | None = None, tags: list[str] | None = None) -> None:
        pass

    schema = parameters(note)
    assert schema["properties"]["text"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
    }
    assert "required" not in schema


def test_recursive_models_keep_their_defs() -> None:
    class Node(BaseModel):
        name: str
        children: list["Node"] = []

    def walk(tree: Node) -> None:
        pass

    schema = parameters(walk)
    assert schema["type"] == "object" and "Node" in schema["$defs"]


def test_a_field_named_title_is_kept() -> None:
    def rename(title: str) -> None:
        pass

    assert parameters(rename)["properties"] == {"title": {"type": "string"}}


def test_the_context_parameter_is_not_part_of_the_schema() -> None:
    def mine(ctx: ToolContext, limit: int = 5) -> None:
        pass

    built = build_tool(mine)
    assert built.takes_context
    assert built.parameters["properties"] == {"limit": {"type": "integer", "default": 5}}


def test_name_description_and_options(registry: tools.ToolRegistry) -> None:
    def ask(args: dict[str, Any], ctx: ToolContext) -> str | None:
        return "refunds need a human"

    @tool(name="refund", timeout=3, requires_approval=ask, idempotent=True)
    def make_refund(order_id: int) -> dict[str, int]:
        """Refunds an order in full.

        Only for orders of the signed-in user; the money goes back to the card."""
        return {"refunded": order_id}

    assert registry.get("refund") is make_refund
    assert make_refund.description == "Refunds an order in full."
    assert (make_refund.timeout, make_refund.idempotent) == (3, True)
    assert make_refund.requires_approval is ask
    assert make_refund(order_id=4) == {"refunded": 4}
    assert make_refund.schema()["function"]["name"] == "refund"


def test_bare_decorator_uses_the_function_name_and_defaults(
    registry: tools.ToolRegistry,
) -> None:
    @tool
    async def lookup_order(order_id: int) -> dict[str, int]:
        """Looks one order up."""
        return {"order_id": order_id}

    assert registry.get("lookup_order") is lookup_order
    assert lookup_order.timeout == tools.DEFAULT_TIMEOUT == 10.0
    assert (lookup_order.requires_approval, lookup_order.idempotent) == (False, False)
    assert lookup_order.description == "Looks one order up."


def test_the_builtin_tools_keep_their_schemas() -> None:
    by_name = {t.name: t for t in (tools.CALCULATOR, tools.CLOCK, tools.WAIT)}
    assert by_name["calculator"].parameters == {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
        "additionalProperties": False,
    }
    assert by_name["clock"].parameters == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert by_name["wait"].parameters == {
        "type": "object",
        "properties": {"seconds": {"type": "number"}},
        "required": ["seconds"],
        "additionalProperties": False,
    }
    assert [by_name[n].timeout for n in ("calculator", "clock", "wait")] == [2.0, 1.0, 31.0]
    assert {"calculator", "clock", "wait"} <= set(REGISTRY.tools)


def _unannotated(query, limit: int = 5) -> None:
    pass


def _no_schema(callback: Any, conn: Iterator[int]) -> None:
    pass


def _star(*names: str) -> None:
    pass


def _context_later(limit: int, ctx: ToolContext) -> None:
    pass


@pytest.mark.parametrize(
    ("func", "problem"),
    [
        (_unannotated, "parameter 'query' has no type annotation"),
        (_no_schema, "parameter 'conn'"),
        (_star, "parameter 'names': *args and **kwargs have no schema"),
        (_context_later, "parameter 'ctx': only the first parameter may be ToolContext"),
    ],
)
def test_a_signature_without_schema_is_refused(func: Any, problem: str) -> None:
    with pytest.raises(ToolDefinitionError, match="parameter") as caught:
        build_tool(func)
    assert problem in str(caught.value)


def test_decorating_a_bad_signature_records_a_problem(registry: tools.ToolRegistry) -> None:
    result = tool(_unannotated)
    assert result is _unannotated and "_unannotated" not in registry.tools
    problem = registry.problems[-1]
    assert problem.kind == "schema" and problem.culprit.endswith("test_tools._unannotated")


def test_two_tools_of_one_name_are_a_problem(registry: tools.ToolRegistry) -> None:
    @tool(name="calculator")
    def my_calculator(expression: str) -> str:
        return expression

    assert registry.get("calculator") is tools.CALCULATOR
    problem = registry.problems[-1]
    assert problem.kind == "duplicate"
    assert "agents.builtin_tools.calculator" in problem.message
    assert "my_calculator" in problem.message
