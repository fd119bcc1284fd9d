"""The JSON API's plumbing: authentication (token or session with CSRF) and error shape."""

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from chat.auth import Principal, parse_bearer, principal_from_token
from chat.errors import ErrorCode, NetraError, forbidden, unauthenticated, unavailable

logger = logging.getLogger("netra.api")

View = Callable[..., Awaitable[HttpResponse]]


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


def json_body(request: HttpRequest) -> dict[str, Any]:
    """Returns the request's JSON object body (empty allowed), or raises 400."""
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NetraError(ErrorCode.BAD_REQUEST, "The body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise NetraError(ErrorCode.BAD_REQUEST, "The body must be a JSON object.")
    return body


def error_response(err: NetraError) -> JsonResponse:
    """Returns `{"error": {"code", "message", "ref"?}}` with the error's status."""
    response = JsonResponse(err.body(), status=err.status)
    if err.retry_after is not None:
        response["Retry-After"] = str(max(1, round(err.retry_after)))
    return response


def api_view(*methods: str) -> Callable[[View], Any]:
    """Wraps an async API view: method check, authentication, typed errors as JSON."""

    def decorate(view: View) -> Any:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(
                    NetraError(
                        ErrorCode.METHOD_NOT_ALLOWED, f"Use {' or '.join(methods)}.", status=405
                    )
                )
            try:
                principal = await authenticate_request(request)
                return await view(request, principal, *args, **kwargs)
            except NetraError as err:
                return error_response(err)
            except DatabaseError as exc:
                logger.warning(
                    "database unavailable for %s %s: %s", request.method, request.path, exc
                )
                return error_response(unavailable("The database is unavailable; retry shortly."))

        return wrapper

    return decorate
