"""The JSON API's plumbing: authentication (token or session with CSRF), request bodies
(one pydantic model per route, validated here for every route) and the error shape."""

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ConfigDict, ValidationError

from chat.auth import Principal, parse_bearer, principal_from_token
from chat.errors import ErrorCode, NetraError, forbidden, unauthenticated, unavailable
from chat.protocol import describe_error

logger = logging.getLogger("netra.api")

View = Callable[..., Awaitable[HttpResponseBase]]
# The methods whose body a route reads; a GET's body is ignored.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Body(BaseModel):
    """A request body of the JSON API: a JSON object, strictly typed like a socket frame."""

    model_config = ConfigDict(strict=True, frozen=True)


class NoBody(Body):
    """The body of a route that takes no fields: empty, or any JSON object. A body not sent
    as `application/json` (a form post with no fields) is not read as JSON there."""


class ThreadBody(Body):
    """`POST /api/threads/`: an optional title (stripped and cut to 200 characters) and
    the agent answering it (default NETRA_DEFAULT_AGENT)."""

    title: str = ""
    agent: str | None = None


class ThreadRenameBody(Body):
    """`PATCH /api/threads/<id>/`: the new title (stripped and cut to 200 characters)."""

    title: str


B = TypeVar("B", bound=BaseModel)


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    def _never_called(_: HttpRequest) -> HttpResponse:
        return HttpResponse()

    result: HttpResponse | None = CsrfViewMiddleware(_never_called).process_view(
        request, _never_called, (), {}
    )
    return result


async def authenticate_request(request: HttpRequest) -> Principal:
    """Returns the principal of an API request; session POSTs must pass the CSRF check."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        principal: Principal = await database_sync_to_async(principal_from_token)(
            parse_bearer(authorization)
        )
        return principal
    user = await request.auser()
    if not user.is_authenticated:
        raise unauthenticated("Log in, or send 'Authorization: Bearer <token>'.")
    if not user.is_active:
        raise forbidden()
    if request.method not in ("GET", "HEAD", "OPTIONS") and _csrf_failure(request) is not None:
        raise NetraError(
            ErrorCode.CSRF_FAILED,
            "CSRF verification failed; send the X-CSRFToken header.",
            status=403,
        )
    return Principal(user=user)


def too_large() -> NetraError:
    """Returns the 413 answer to a body over API_MAX_BODY_BYTES."""
    limit = settings.API_MAX_BODY_BYTES
    return NetraError(ErrorCode.TOO_LARGE, f"The body is larger than {limit} bytes.", status=413)


def read_body(request: HttpRequest, model: type[B]) -> B:
    """Returns the request's body validated by `model` (an empty body is `{}`); raises 413
    over API_MAX_BODY_BYTES and 400 for anything else wrong: not UTF-8 JSON (a lone
    surrogate included), not an object, a missing or mistyped field."""
    limit = settings.API_MAX_BODY_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError as exc:
        raise NetraError(
            ErrorCode.BAD_REQUEST, "The Content-Length header is not a number."
        ) from exc
    if declared > limit:
        raise too_large()
    raw = request.body  # past DATA_UPLOAD_MAX_MEMORY_SIZE: RequestDataTooBig, a 413 too
    if len(raw) > limit:
        raise too_large()
    if model is NoBody and request.content_type != "application/json":
        return model()
    try:
        parsed = model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        kind = exc.errors(include_url=False, include_input=False)[0]["type"]
        if kind == "json_invalid":
            message = "The body is not valid JSON (UTF-8, no lone surrogates)."
        elif kind == "model_type":
            message = "The body must be a JSON object."
        else:
            message = describe_error(exc)
        raise NetraError(ErrorCode.BAD_REQUEST, message) from exc
    if _has_nul(parsed.model_dump()):  # PostgreSQL text cannot hold it: refuse it everywhere
        raise NetraError(ErrorCode.BAD_REQUEST, "Text may not contain NUL (\\u0000) characters.")
    return parsed


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def error_response(err: NetraError) -> JsonResponse:
    """Returns `{"error": {"code", "message", "ref"?}}` with the error's status."""
    response = JsonResponse(err.body(), status=err.status)
    if err.retry_after is not None:
        response["Retry-After"] = str(max(1, round(err.retry_after)))
    return response


def api_view(
    *methods: str, body: type[BaseModel] | Mapping[str, type[BaseModel]] | None = None
) -> Callable[[View], Any]:
    """Wraps an async API view: method check, authentication, the body, typed errors as JSON.

    Every request with a body method has its body validated here: by `body` (one model, or
    one per method), which the view then gets as its `body` argument, or, for a route or
    method that declares none, by `NoBody`."""

    def decorate(view: View) -> Any:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return error_response(
                    NetraError(
                        ErrorCode.METHOD_NOT_ALLOWED, f"Use {' or '.join(methods)}.", status=405
                    )
                )
            try:
                principal = await authenticate_request(request)
                if request.method in BODY_METHODS:
                    model = body.get(request.method) if isinstance(body, Mapping) else body
                    parsed = read_body(request, model or NoBody)
                    if model is not None:
                        kwargs["body"] = parsed
                return await view(request, principal, *args, **kwargs)
            except NetraError as err:
                return error_response(err)
            except RequestDataTooBig:
                return error_response(too_large())
            except DatabaseError as exc:
                logger.warning(
                    "database unavailable for %s %s: %s", request.method, request.path, exc
                )
                return error_response(unavailable("The database is unavailable; retry shortly."))

        return wrapper

    return decorate
