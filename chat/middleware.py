"""HTTP middleware: a strict Content-Security-Policy on every response."""

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Django's admin sets a few inline style attributes; its pages keep scripts strict.
ADMIN_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def _apply(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    policy = ADMIN_CSP if request.path.startswith("/admin/") else CSP
    response.headers.setdefault("Content-Security-Policy", policy)
    return response


@sync_and_async_middleware
def content_security_policy(get_response: Callable[[HttpRequest], Any]) -> Any:
    """Adds the Content-Security-Policy header (no inline scripts anywhere)."""
    if iscoroutinefunction(get_response):
        async_get: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = get_response

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            return _apply(request, await async_get(request))

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _apply(request, get_response(request))

    return middleware
