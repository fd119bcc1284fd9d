"""What a tool is: `@tool`, its context, its JSON-schema parameters derived with pydantic,
and the process's registry of tools. The public names are re-exported by agents.tools."""

import importlib
import inspect
import logging
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, overload

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections
from pydantic import BaseModel, ConfigDict, PydanticUserError, ValidationError, create_model

from agents.errors import ToolDefinitionError, ToolError

logger = logging.getLogger("netra.tools")

DEFAULT_TIMEOUT = 10.0
MAX_ERROR_MESSAGE = 600
# Sync tools run here, not on asgiref's shared thread: a tool past its timeout cannot be
# stopped, and on the shared thread it would stall every ORM call of the process.
TOOL_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="netra-tool")

ToolFunc = Callable[..., Awaitable[Any]]
ApprovalRule = bool | Callable[[dict[str, Any], "ToolContext"], str | None]


@dataclass(frozen=True)
class ToolContext:
    """The run a tool call belongs to; the tool acts for this user and nobody else."""

    user_id: Any
    username: str
    thread_id: uuid.UUID
    run_id: uuid.UUID
    tool_call_id: str


@dataclass(frozen=True)
class Tool:
    """A callable tool: name, description, JSON-schema parameters, timeout and options.

    `func(args)` (or `func(args, context)` when `takes_context`) validates the arguments
    and runs the tool; `function` is the decorated function itself, which calling the tool
    object runs directly (handy in a team's unit tests)."""

    name: str
    description: str
    parameters: dict[str, Any]
    func: ToolFunc
    timeout: float = DEFAULT_TIMEOUT
    takes_context: bool = False
    requires_approval: ApprovalRule = False
    idempotent: bool = False
    origin: str = ""
    function: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the decorated function directly, without validation or dispatch."""
        if self.function is None:
            raise TypeError(f"tool {self.name!r} has no function to call directly")
        return self.function(*args, **kwargs)

    def schema(self) -> dict[str, Any]:
        """Returns the tool in the chat-completions `tools` format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class ToolProblem:
    """A misconfigured tool or tool module, reported by the system check."""

    kind: str  # "import", "duplicate" or "schema"
    culprit: str
    message: str


@dataclass
class ToolRegistry:
    """The tools an agent may call, by name, and the problems found while loading them."""

    tools: dict[str, Tool] = field(default_factory=dict)
    problems: list[ToolProblem] = field(default_factory=list)

    def register(self, tool: Tool) -> Tool:
        """Adds a tool (replacing one of the same name)."""
        self.tools[tool.name] = tool
        return tool

    def add(self, tool: Tool) -> Tool:
        """Adds a decorated tool; a second tool of the same name is a problem, not a
        replacement (the same function decorated again, as on a re-import, replaces)."""
        existing = self.tools.get(tool.name)
        if existing is not None and existing.origin != tool.origin:
            self.problems.append(
                ToolProblem(
                    "duplicate",
                    tool.origin,
                    f"Two tools are named {tool.name!r}: {existing.origin} and {tool.origin}.",
                )
            )
            return existing
        return self.register(tool)

    def get(self, name: str) -> Tool | None:
        """Returns the tool of that name, or None."""
        return self.tools.get(name)

    def schemas(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Returns every tool's schema, or those of `names` only."""
        wanted = None if names is None else set(names)
        return [t.schema() for t in self.tools.values() if wanted is None or t.name in wanted]

    def import_modules(self, paths: Iterable[str]) -> None:
        """Imports each tool module (their @tool functions register themselves); a module
        that does not import is recorded for the system check instead of raised."""
        for path in paths:
            try:
                importlib.import_module(path)
            except Exception as exc:  # any import failure is a check error, not a crash
                logger.exception(
                    "tool module %r does not import", path, extra={"tool_module": path}
                )
                self.problems.append(
                    ToolProblem(
                        "import",
                        path,
                        f"The tool module {path!r} does not import: {type(exc).__name__}: {exc}",
                    )
                )


REGISTRY = ToolRegistry()


# --- parameters: the signature as a pydantic model and its JSON schema ------------------------

_SCHEMA_MAPS = {"properties", "$defs", "patternProperties", "dependentSchemas"}
_SCHEMA_LISTS = {"anyOf", "allOf", "oneOf", "prefixItems"}
_SCHEMA_ONES = {"items", "additionalProperties", "not", "contains", "propertyNames"}


class _RecursiveSchemaError(Exception):
    pass


def _clean(node: Any, defs: dict[str, Any] | None, seen: frozenset[str]) -> Any:
    """Drops titles and inlines $defs references (unless `defs` is None), walking schema
    positions only (so a default or enum value holding a "title" key is left alone)."""
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if defs is not None and isinstance(ref, str) and ref.startswith("#/$defs/"):
        key = ref.removeprefix("#/$defs/")
        if key in seen or key not in defs:
            raise _RecursiveSchemaError(key)
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**_clean(defs[key], defs, seen | {key}), **_clean(rest, defs, seen)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _clean(sub, defs, seen) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_clean(sub, defs, seen) for sub in value]
        elif key in _SCHEMA_ONES:
            out[key] = _clean(value, defs, seen)
        else:
            out[key] = value
    return out


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Returns the model's JSON schema as chat-completions tools take it: an object with
    properties and required, no titles, nested models inlined (recursive ones keep $defs)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    try:
        cleaned: dict[str, Any] = _clean(schema, defs, frozenset())
    except _RecursiveSchemaError:
        cleaned = _clean({**schema, "$defs": defs}, None, frozenset())
    cleaned.setdefault("properties", {})
    return cleaned


def _first_paragraph(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _model(name: str, fields: dict[str, Any]) -> type[BaseModel]:
    model: type[BaseModel] = create_model(
        name, __config__=ConfigDict(extra="forbid", protected_namespaces=()), **fields
    )
    json_schema(model)
    return model


def _culprit(name: str, fields: dict[str, Any], exc: PydanticUserError) -> str:
    """Names the parameter pydantic could not describe, with the first sentence of why."""
    why = str(exc).split("\n", 1)[0].split(". ", 1)[0].rstrip(".")
    for field_name, spec in fields.items():
        try:
            _model(f"{name}_{field_name}", {field_name: spec})
        except PydanticUserError:
            return f"parameter {field_name!r}: {why}"
    return why


def arguments_model(func: Callable[..., Any], name: str) -> tuple[type[BaseModel], bool]:
    """Returns the pydantic model of the function's keyword parameters, and whether its
    first parameter takes the ToolContext; raises ToolDefinitionError naming the problem."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ToolDefinitionError(f"its annotations do not resolve: {exc}") from exc
    params = list(inspect.signature(func).parameters.values())
    takes_context = bool(params) and hints.get(params[0].name) is ToolContext
    fields: dict[str, Any] = {}
    for param in params[1:] if takes_context else params:
        where = f"parameter {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *args and **kwargs have no schema")
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"{where} is positional-only; tools take keywords")
        if param.name not in hints:
            raise ToolDefinitionError(f"{where} has no type annotation")
        if hints[param.name] is ToolContext:
            raise ToolDefinitionError(f"{where}: only the first parameter may be ToolContext")
        if param.name.startswith("_"):
            raise ToolDefinitionError(f"{where}: argument names may not start with '_'")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    try:
        model = _model(f"{name}_arguments", fields)
    except PydanticUserError as exc:
        raise ToolDefinitionError(_culprit(name, fields, exc)) from exc
    return model, takes_context


def validate_arguments(model: type[BaseModel], args: dict[str, Any]) -> dict[str, Any]:
    """Returns the validated keyword arguments; raises ToolError(bad_arguments) naming
    each invalid field, so that the model can correct its call."""
    try:
        validated = model.model_validate(args)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        message = "Invalid arguments: " + "; ".join(problems)
        raise ToolError("bad_arguments", message[:MAX_ERROR_MESSAGE]) from exc
    return {name: getattr(validated, name) for name in type(validated).model_fields}


def _in_tool_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs a sync tool in its worker thread with fresh database connections, closed after:
    a pool thread that idles must not hold a connection open."""
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        connections.close_all()


def _runner(func: Callable[..., Any], model: type[BaseModel], takes_context: bool) -> ToolFunc:
    is_async = inspect.iscoroutinefunction(func)
    in_thread = sync_to_async(_in_tool_thread, thread_sensitive=False, executor=TOOL_THREADS)

    async def run(args: dict[str, Any], context: ToolContext | None = None) -> Any:
        kwargs = validate_arguments(model, args)
        first = (context,) if takes_context else ()
        if is_async:
            return await func(*first, **kwargs)
        return await in_thread(func, *first, **kwargs)

    return run


def build_tool(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    requires_approval: ApprovalRule = False,
    idempotent: bool = False,
) -> Tool:
    """Returns the Tool of a function, without registering it; raises ToolDefinitionError
    when its signature cannot be described as JSON schema."""
    tool_name = name or func.__name__
    model, takes_context = arguments_model(func, tool_name)
    return Tool(
        name=tool_name,
        description=_first_paragraph(func),
        parameters=json_schema(model),
        func=_runner(func, model, takes_context),
        timeout=timeout,
        takes_context=takes_context,
        requires_approval=requires_approval,
        idempotent=idempotent,
        origin=f"{func.__module__}.{func.__qualname__}",
        function=func,
    )


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    requires_approval: ApprovalRule = False,
    idempotent: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    requires_approval: ApprovalRule = False,
    idempotent: bool = False,
) -> Any:
    """Turns a function into a tool of this process: `@tool` or `@tool(name=..., timeout=...)`.

    A signature that has no JSON schema does not raise here: it is recorded and the system
    check refuses to start the server, naming the function; the function is returned as is."""

    def decorate(target: Callable[..., Any]) -> Any:
        try:
            built = build_tool(
                target,
                name=name,
                timeout=timeout,
                requires_approval=requires_approval,
                idempotent=idempotent,
            )
        except ToolDefinitionError as exc:
            culprit = f"{target.__module__}.{target.__qualname__}"
            REGISTRY.problems.append(
                ToolProblem(
                    "schema",
                    culprit,
                    f"The tool {name or target.__name__!r} ({culprit}) has no JSON schema: {exc}.",
                )
            )
            return target
        REGISTRY.add(built)
        return built

    return decorate if func is None else decorate(func)
